"""Data validation: the new events since the production watermark; a failed suite stops the run."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def validate_data(config_yaml: str, data_dir: str, until: str, schedule_time: str,
                  holdout_days: int, root: str, run_id: str, snapshot: Output[Dataset],
                  metrics: Output[Metrics], page: Output[Markdown]) -> str:
    """Great Expectations suites on the batch; writes the cycle's snapshot (windows, counts).

    An empty `until` means the day of `schedule_time` (a recurring run's scheduled time), else
    today (UTC); an empty `run_id` becomes "cycle-<until>". Returns the run id the later steps
    record under. The page (suites, failing expectations) is written on a failed suite too."""
    import re
    from datetime import datetime, timezone

    import yaml

    from onerec import run_pages, stages
    from onerec.config import Config

    if not until:
        m = re.match(r"\d{4}-\d{2}-\d{2}", schedule_time)
        until = m.group(0) if m else datetime.now(timezone.utc).strftime("%Y-%m-%d")
    run_id = run_id or f"cycle-{until}"
    cfg = Config.from_dict(yaml.safe_load(config_yaml))
    try:
        out = stages.run_stage("validate", root, run_id, stages.validate, cfg, data_dir,
                               snapshot.path, until=until, holdout_days=holdout_days, root=root)
    finally:  # a failed suite's page too: which expectations stopped the cycle
        run_pages.write_validation(snapshot.path, snapshot.uri, page.path, root, run_id)
    snapshot.metadata.update({"fingerprint": out["fingerprint"], "until": until,
                              "watermark_ms": out["watermark_ms"]})
    for key in ("n_batch_events", "n_train_events", "n_holdout_events"):
        metrics.log_metric(key, out[key])
    return run_id
