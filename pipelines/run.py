"""Run the pipeline: locally under `kfp.local`, or on a Kubeflow Pipelines server.

Local: `kfp.local.init(runner=SubprocessRunner(use_venv=False))` runs every component as a
subprocess of this virtual environment. The components import `onerec` and `pipelines`, so the
subprocesses get this checkout first on PYTHONPATH (an editable install elsewhere must not
shadow the code under test). The pipeline runs once per cycle; ROOT carries production between.

Server: everything that talks to one goes through `PipelineServer` (upload, run now, schedule),
so tests check the objects a submission would send; `KfpServer` is the `kfp.Client` path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from onerec.config import Config

REPO = Path(__file__).resolve().parents[1]


def local_params(cfg: Config, *, until: str, run_id: str, root: str | Path,
                 data_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """Pipeline arguments of one local cycle (paths absolute: steps run as subprocesses)."""
    return {"config_yaml": cfg.to_yaml(), "until": until, "run_id": run_id,
            "root": str(Path(root).resolve()), "data_dir": str(Path(data_dir).resolve()),
            **overrides}


def _unshadow_docker() -> None:
    """This repository's `docker/` folder (Dockerfiles) is importable as a namespace package
    when the checkout is on sys.path; kfp.local would take it for the Docker SDK and fail.
    Mark the SDK as absent instead (kfp.local then offers only the SubprocessRunner we use)."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("docker") if "docker" not in sys.modules else None
    if spec is not None and spec.origin is None:  # a namespace package: not the SDK
        sys.modules["docker"] = None  # type: ignore[assignment]


def init_local(pipeline_root: str | Path) -> None:
    """kfp.local with subprocesses in this environment, this checkout first on the path."""
    _unshadow_docker()
    from kfp import local

    paths = [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(Path(pipeline_root).resolve()), raise_on_error=True)


def run_local(params: dict[str, Any], pipeline_root: str | Path) -> None:
    """One pipeline run under kfp.local (raises RuntimeError when a step fails)."""
    from pipelines.continuous import make_pipeline

    init_local(pipeline_root)
    make_pipeline(cluster=False)(**params)


def cycle_days(start: str, cycles: int) -> list[str]:
    """`cycles` successive days from `start` (YYYY-MM-DD)."""
    d0 = datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return [(d0 + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(cycles)]


# -- a Kubeflow Pipelines server -----------------------------------------------------------------
class PipelineServer(Protocol):
    def upload(self, package: Path, name: str, description: str) -> str: ...

    def experiment(self, name: str) -> str: ...

    def run(self, package: Path, experiment_id: str, run_name: str,
            params: dict[str, Any]) -> str: ...

    def schedule(self, package: Path, experiment_id: str, job_name: str, cron: str,
                 params: dict[str, Any]) -> str: ...


class KfpServer:
    """`kfp.Client` behind `PipelineServer` (the only code here that needs a live server)."""

    def __init__(self, host: str, namespace: str | None = None, client: Any = None) -> None:
        if client is None:
            import kfp

            client = kfp.Client(host=host, namespace=namespace)
        self.client = client
        self.namespace = namespace

    def upload(self, package: Path, name: str, description: str) -> str:
        existing = self.client.get_pipeline_id(name)
        if existing:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
            version = self.client.upload_pipeline_version(
                str(package), pipeline_version_name=f"{name}-{stamp}", pipeline_id=existing)
            return str(version.pipeline_id)
        return str(self.client.upload_pipeline(str(package), pipeline_name=name,
                                               description=description).pipeline_id)

    def experiment(self, name: str) -> str:
        return str(self.client.create_experiment(name, namespace=self.namespace).experiment_id)

    def run(self, package: Path, experiment_id: str, run_name: str,
            params: dict[str, Any]) -> str:
        res = self.client.create_run_from_pipeline_package(
            str(package), arguments=params, run_name=run_name, experiment_id=experiment_id,
            enable_caching=False, service_account="onerec-pipeline")
        return str(res.run_id)

    def schedule(self, package: Path, experiment_id: str, job_name: str, cron: str,
                 params: dict[str, Any]) -> str:
        rr = self.client.create_recurring_run(
            experiment_id=experiment_id, job_name=job_name, cron_expression=cron,
            pipeline_package_path=str(package), params=params, max_concurrency=1,
            no_catchup=True,
            enable_caching=False, service_account="onerec-pipeline")
        return str(rr.recurring_run_id)


@dataclass
class Submission:
    """What `submit` sent, for the CLI to print and tests to check."""

    pipeline_id: str
    experiment_id: str
    run_id: str | None = None
    recurring_run_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None


def check_cron(cron: str) -> str:
    """KFP's cron has six fields (seconds first): '0 0 2 * * *' is 02:00 every day."""
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"--schedule: KFP cron has 6 fields (sec min hour dom month dow), got "
                         f"{len(fields)} in {cron!r}; e.g. '0 0 2 * * *' for 02:00 daily")
    return cron


def submit(server: PipelineServer, package: Path, params: dict[str, Any], *,
           name: str, experiment: str = "onerec", schedule: str | None = None) -> Submission:
    """Upload the compiled pipeline; run it once now, or create a recurring run on `schedule`
    (a recurring run leaves `until` empty: each run trains up to its scheduled day)."""
    from pipelines.continuous import PIPELINE_NAME

    pipeline_id = server.upload(package, name, f"{PIPELINE_NAME}: OneRec continuous training")
    exp = server.experiment(experiment)
    if schedule is None:
        run = server.run(package, exp, f"{name}-{params.get('until') or 'now'}", params)
        return Submission(pipeline_id, exp, run_id=run, params=params)
    cron = check_cron(schedule)
    params = {k: v for k, v in params.items() if k not in ("until", "run_id")}
    rr = server.schedule(package, exp, f"{name}-scheduled", cron, params)
    return Submission(pipeline_id, exp, recurring_run_id=rr, params=params, cron=cron)
