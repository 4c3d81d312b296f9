"""The `onerec` command line: one entry point for every stage, thin over the library.

Each command builds one `Config` (``--config FILE`` or ``--preset NAME``, then ``--set a.b=v``
overrides) and calls into `onerec`; KFP components call the same functions. Errors a user can
fix (bad config key, missing or corrupt file) print one red line and exit 2; a failed data
validation exits 1; nothing is written on either path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from onerec.app import cli_options
from onerec.app.cli_options import ConfigOpt, PresetOpt, SetOpt
from onerec.config import Config, ConfigError
from onerec.data.schema import DataError

app = typer.Typer(
    name="onerec",
    help="OneRec on Kubernetes: an end-to-end generative recommender with continuous training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show and check the one Config.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: summaries and the shipped sample.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")


def _register_stages() -> None:
    from onerec.app.align_cli import register as register_align
    from onerec.app.features_cli import register as register_features
    from onerec.app.pipeline_cli import register as register_pipeline
    from onerec.app.rollout_cli import register as register_rollout
    from onerec.app.tokenizer_cli import register as register_tokenize
    from onerec.app.validate_cli import register as register_validate

    register_validate(app)
    register_tokenize(app)
    register_features(app)
    register_rollout(app)
    register_pipeline(app)
    register_align(app)


_register_stages()

console = Console()
err_console = Console(stderr=True)

DEFAULT_DATA = Path("data/kuairand-pure")



def fail(msg: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
    return typer.Exit(code)


def load_config(config: Path | None, preset: str | None, overrides: list[str] | None) -> Config:
    try:
        return cli_options.load_config(config, preset, overrides)
    except ConfigError as e:
        raise fail(f"config: {e}") from None


# -- config ---------------------------------------------------------------------------------------
@config_app.command("show")
def config_show(config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved Config as YAML (with its fingerprint)."""
    cfg = load_config(config, preset, set_)
    sys.stdout.write(cfg.to_yaml())
    sys.stdout.write(f"# fingerprint: {cfg.fingerprint()}\n")


@config_app.command("save")
def config_save(out: Annotated[Path, typer.Argument(help="Where to write the YAML.")],
                config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None) -> None:
    """Write the resolved Config to a YAML file (atomically)."""
    cfg = load_config(config, preset, set_)
    cfg.save(out)
    console.print(f"wrote {out} (fingerprint {cfg.fingerprint()})")


# -- data -----------------------------------------------------------------------------------------
@data_app.command("summary")
def data_summary(data_dir: Annotated[Path, typer.Argument()] = DEFAULT_DATA) -> None:
    """Rows, users, videos and feedback rates of a KuaiRand-layout folder."""
    from onerec.data import kuairand

    try:
        ds = kuairand.load(data_dir)
    except DataError as e:
        raise fail(str(e)) from None
    table = Table(title=f"{data_dir}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for k, v in ds.summary().items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(table)


@data_app.command("prepare-sample")
def data_prepare_sample(
    src: Annotated[Path, typer.Argument(help="The shared KuaiRand-Pure folder.")],
    dst: Annotated[Path, typer.Argument(help="Where the sample goes.")] = DEFAULT_DATA,
) -> None:
    """Rebuild the shipped KuaiRand sample from the shared copy (cleaning documented there)."""
    from onerec.data import kuairand

    try:
        report = kuairand.prepare_sample(src, dst)
    except DataError as e:
        raise fail(str(e)) from None
    console.print_json(json.dumps(report))


# -- pretrain -------------------------------------------------------------------------------------
def metrics_table(title: str, rows: list[tuple[str, dict]]) -> Table:
    cols = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "legality", "coverage@10")
    table = Table(title=title)
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in rows:
        table.add_row(name, *(f"{m[c]:.4f}" if c in m else "-" for c in cols))
    return table


def run_pretrain(cfg: Config, dataset: str, data_dir: Path, out: Path, minutes: float,
                 beam: int | None) -> dict:
    """Codebook -> pretraining -> offline evaluation; prints a table, writes metrics.json."""
    from onerec import pretrain
    from onerec.baselines import fit_popularity
    from onerec.evaluate import rank_metrics, rank_metrics_multi

    def log(rec: dict) -> None:
        if "loss" in rec:
            console.print(f"step {rec['step']:>6}  loss {rec['loss']:.4f}  "
                          f"{rec['samples_per_s']:.0f} samples/s  MFU {rec['mfu']:.3f}",
                          highlight=False)

    with console.status(f"pretraining on {dataset} ({minutes:g} min budget) ..."):
        if dataset == "kuairand":
            res = pretrain.run_kuairand(cfg, data_dir, out, time_budget_s=minutes * 60,
                                        beam_width=beam, log=log)
            ev = res["train_events"]
            pos = ev[(ev["long_view"] == 1) | (ev["is_like"] == 1)]
            pop = fit_popularity([pos["video_id"].tolist()]).recommend(len(res["targets"]), 10)
            baseline = rank_metrics_multi(pop, res["targets"])
        else:
            from onerec.data.sequences import load_beauty, load_microlens

            data = (load_beauty if dataset == "beauty" else load_microlens)(data_dir)
            res = pretrain.run_sequences(cfg, data, out, time_budget_s=minutes * 60,
                                         beam_width=beam, log=log)
            split = data.split(cfg.data.max_seq_len)
            pop = fit_popularity(split.train).recommend(len(split.test), 10)
            baseline = rank_metrics(pop, [t for *_, t in split.test])
    console.print(metrics_table(f"{dataset}: offline evaluation (full ranking)",
                                [("OneRec", res["metrics"]), ("popularity", baseline)]))
    summary = {"dataset": dataset, "metrics": res["metrics"], "popularity": baseline,
               "steps": res["steps"], "train_s": res["train_s"], "params": res["params"],
               "config_fingerprint": cfg.fingerprint()}
    from onerec.io import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2, default=float))
    console.print(f"checkpoint {out / 'train' / 'checkpoint'}  metrics {out / 'metrics.json'}")
    return summary


@app.command()
def pretrain(
    dataset: Annotated[str, typer.Option(help="kuairand (temporal split), beauty or microlens "
                                              "(TIGER leave-one-out).")] = "kuairand",
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder [default: the shipped "
                                                       "KuaiRand sample / ../shared].")] = None,
    out: Annotated[Path, typer.Option(help="Run folder: codebook/, train/, metrics.json.")] =
        Path("runs/pretrain"),
    minutes: Annotated[float, typer.Option(help="Training wall-time budget.")] = 10.0,
    beam: Annotated[int | None, typer.Option(help="Beam width at evaluation "
                                                  "[default: serve.beam_width].")] = None,
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Streaming pretraining (next-token prediction on semantic IDs) and offline evaluation."""
    from onerec.distributed import init_from_env

    cfg = load_config(config, preset, set_)
    if dataset not in ("kuairand", "beauty", "microlens"):
        raise fail(f"--dataset: must be kuairand, beauty or microlens, got {dataset!r}")
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
    default_dir = {"kuairand": DEFAULT_DATA, "beauty": shared / "amazon-beauty",
                   "microlens": shared / "microlens"}[dataset]
    init_from_env()
    try:
        run_pretrain(cfg, dataset, data_dir or default_dir, out, minutes, beam)
    except DataError as e:
        raise fail(str(e)) from None


# -- demo -----------------------------------------------------------------------------------------
@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="KuaiRand-layout folder.")] = DEFAULT_DATA,
    out: Annotated[Path, typer.Option(help="Run folder: report.md/json, validation/, "
                                      "pipeline/ (state, GitOps repo), serving/, ab/.")] =
        Path("runs/demo"),
    minutes: Annotated[float, typer.Option(help="Safety cap on each training stage's wall "
                                           "time per cycle (alignment gets half of it); the "
                                           "steps come from --epochs and the Config.")] = 15.0,  # DemoOptions.minutes
    epochs: Annotated[float, typer.Option(help="Pretraining passes over each cycle's new "
                                          "requests.")] = 6.0,  # DemoOptions.epochs
    cycles: Annotated[int, typer.Option(help="Continuous-training cycles (successive days).")]
        = 2,
    stages_: Annotated[str | None, typer.Option(
        "--stages", help="Comma list of pipeline stages (default: every stage installed).")]
        = None,
    max_steps: Annotated[int, typer.Option(help="Pretraining steps per cycle (0: from "
                                           "--epochs).")] = 0,
    eval_users: Annotated[int, typer.Option(help="Users the gate measures (0: every "
                                            "held-out user).")] = 0,
    popularity_floor: Annotated[bool, typer.Option(help="Gate: block a candidate "
                                                   "significantly below popularity.")] = True,
    ab_requests: Annotated[int, typer.Option(help="Simulated requests in the A/B.")] = 300_000,
    skip_serve: Annotated[bool, typer.Option(
        "--skip-serve", help="Start no server: no serving step, no A/B.")] = False,
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """The main job on the shipped data: validate it; run the continuous-training pipeline
    under kfp.local for CYCLES days (validate, codebook, pretrain, reward, align, gate, export,
    publish; the last version goes out as a canary in a local GitOps repository); serve it
    (KServe, tritonclient over HTTP and gRPC); decide the canary by an A/B of both served
    versions on simulated KuaiRand users; write the run report (OUT/report.md)."""
    from onerec.app.demo import DemoError, DemoOptions, run_demo
    from onerec.stages import StageError, day_ms

    cfg = load_config(config, preset, set_)
    if cycles < 1:
        raise fail("--cycles: must be >= 1")
    stage_list = ""
    if stages_:
        from onerec.stages import parse_stages

        try:
            stage_list = ",".join(parse_stages(stages_))
        except StageError as e:
            raise fail(str(e)) from None
    if epochs <= 0:
        raise fail("--epochs: must be > 0")
    opts = DemoOptions(data_dir=data_dir, out=out, minutes=minutes, epochs=epochs, cycles=cycles,
                       stages_csv=stage_list, max_steps=max_steps, eval_users=eval_users,
                       popularity_floor=popularity_floor, skip_serve=skip_serve,
                       ab_requests=ab_requests)
    try:
        day_ms(opts.start)
        run_demo(cfg, opts, console)
    except DataError as e:
        raise fail(str(e)) from None
    except DemoError as e:
        raise fail(f"{e}; report: {out / 'report.md'}", e.code) from None


# -- serve / recommend (issue #6; serving/ holds the code, kserve is imported only by `serve`) ----
@app.command()
def serve(
    repo: Annotated[Path, typer.Option(help="Triton model repository "
                                            "(<repo>/<model>/<version>/model.onnx).")],
    feature_repo: Annotated[Path | None, typer.Option(
        help="Rendered Feast repo: read user sequences online [default: histories come in "
             "the request].")] = None,
    http_port: Annotated[int | None, typer.Option(help="REST port [default: serve.http_port].")]
        = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port [default: serve.grpc_port].")]
        = None,
    host: Annotated[str | None, typer.Option(
        help="Address to listen on (0.0.0.0: every interface) [default: serve.host, "
             "127.0.0.1].")] = None,
    codebook: Annotated[Path | None, typer.Option(
        help="Codebook folder whose fingerprint versions must carry [default: pinned by the "
             "first version loaded].")] = None,
    cold_start: Annotated[Path | None, typer.Option(
        help="Cold-start table JSON [default: <version>/cold_start.json].")] = None,
    cold_start_data: Annotated[Path | None, typer.Option(
        help="Or build the cold-start table at start from this KuaiRand-layout folder's "
             "most engaged videos of its last data.test_days days.")] = None,
    poll_interval: Annotated[float, typer.Option(
        help="Seconds between scans for new versions (0: explicit reload only).")] = 2.0,
    feast_timeout: Annotated[float, typer.Option(
        help="Seconds a Feast online read may take; past it (or on an error) its users are "
             "served without online features, flagged features_unavailable.")] = 1.0,
    feast_retry: Annotated[float, typer.Option(
        help="Seconds between probes of an unavailable Feast online store.")] = 2.0,
    model_name: Annotated[str | None, typer.Option(
        help="Model folder in the repo [default: the only one].")] = None,
    rm_selection: Annotated[Path | None, typer.Option(
        help="Reward-model folder (`onerec align`): re-rank each beam by P-Score, overriding "
             "the reward model each version carries (served by default; "
             "serve.rm_selection=false: beam order).")] = None,
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Serve the exported model locally: a KServe ModelServer speaking Open Inference Protocol
    v2 over REST and gRPC (transformer `<model>` and raw graph `<model>-graph`), hot-swapping
    new versions as they appear in the repository."""
    cfg = load_config(config, preset, set_)
    if not repo.is_dir():
        raise fail(f"--repo: {repo} is not a folder (run `onerec export` first)")
    argv = ["--repo", str(repo), "--poll_interval", str(poll_interval),
            "--feast_timeout", str(feast_timeout), "--feast_retry", str(feast_retry),
            "--http_port", str(http_port or cfg.serve.http_port),
            "--grpc_port", str(grpc_port or cfg.serve.grpc_port),
            "--host", host or cfg.serve.host]
    if config is not None:
        argv += ["--config", str(config)]
    elif preset is not None:
        argv += ["--preset", preset]
    for ov in set_ or []:
        argv += ["--set", ov]
    for flag, value in (("--feature_repo", feature_repo), ("--codebook", codebook),
                        ("--cold_start", cold_start), ("--cold_start_data", cold_start_data),
                        ("--model_name", model_name), ("--rm_selection", rm_selection)):
        if value is not None:
            argv += [flag, str(value)]
    try:
        from serving.server import main as serve_main
    except ImportError as e:
        raise fail(f"serving needs the `serving` extra (kserve, onnxruntime): {e}") from None
    serve_main(argv)


@app.command()
def recommend(
    user: Annotated[list[int], typer.Option(help="User id (repeat for a batch).")],
    history: Annotated[str | None, typer.Option(
        help="Comma-separated video ids the user clicked, oldest first (sent as the short and "
             "lifelong histories) [default: the server reads Feast].")] = None,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    url: Annotated[str | None, typer.Option(
        help="host:port [default: serve.host and serve.http_port / grpc_port].")] = None,
    beam_width: Annotated[int | None, typer.Option(help="[default: the server's]")] = None,
    top_n: Annotated[int | None, typer.Option(help="[default: the server's]")] = None,
    model: Annotated[str, typer.Option(help="Model name on the server.")] = "onerec",
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Ask a running server (`onerec serve`) for recommendations with tritonclient; print a
    table (video ids best first, log-probability, cold-start flag)."""
    cfg = load_config(config, preset, set_)
    if protocol not in ("http", "grpc"):
        raise fail(f"--protocol: must be http or grpc, got {protocol!r}")
    port = cfg.serve.http_port if protocol == "http" else cfg.serve.grpc_port
    url = url or f"{cfg.serve.host}:{port}"
    histories = None
    if history:
        try:
            ids = [int(v) for v in history.split(",") if v.strip()]
        except ValueError:
            raise fail(f"--history: expected comma-separated integers, got {history!r}") from None
        histories = {"short_history": [ids] * len(user), "long_history": [ids] * len(user)}
    from serving.client import RecommendClient

    try:
        client = RecommendClient(url, protocol, model)
        res = client.recommend(list(user), histories, beam_width=beam_width, top_n=top_n)
    except Exception as e:  # tritonclient raises InferenceServerException or socket errors
        msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
        raise fail(f"{protocol}://{url}: {msg or type(e).__name__}") from None
    table = Table(title=f"{model} v{res.model_version} (beam {res.beam_width}, top {res.top_n},"
                        f" {protocol})")
    for col in ("user", "rank", "video_id", "score", "cold start", "unknown ids"):
        table.add_column(col, justify="left" if col == "cold start" else "right")
    for row in res.rows:
        if not row.video_ids:
            table.add_row(str(row.user_id), "-", "-", "-", str(row.cold_start),
                          str(row.unknown_ids))
        for rank, (vid, score) in enumerate(zip(row.video_ids, row.scores, strict=True), 1):
            first = rank == 1
            table.add_row(str(row.user_id) if first else "", str(rank), str(vid),
                          f"{score:.3f}", str(row.cold_start) if first else "",
                          str(row.unknown_ids) if first else "")
    console.print(table)
    degraded = [str(row.user_id) for row in res.rows if row.features_unavailable]
    if degraded:
        console.print(f"features_unavailable: the Feast online store could not be read for "
                      f"user(s) {', '.join(degraded)}; answered without their online features")


# -- export ---------------------------------------------------------------------------------------
@app.command("export")
def export_model(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder (e.g. runs/pretrain/train/"
                                                  "checkpoint).")],
    codebook: Annotated[Path, typer.Option(help="Codebook folder the model was trained with.")],
    out: Annotated[Path, typer.Option(help="Triton model repository to add a version to.")] =
        Path("runs/model_repository"),
    beam_width: Annotated[list[int] | None, typer.Option(
        "--beam-width", help="Beam width of a graph; repeat for several, the first is the "
                             "default (default: serve.beam_width).")] = None,
    model_name: Annotated[str, typer.Option(help="Model folder name in the repository.")] =
        "onerec",
    version: Annotated[int | None, typer.Option(help="Version number (default: the next free one).")] = None,
    exporter: Annotated[str, typer.Option(help="torch.onnx exporter: auto, dynamo or "
                                               "torchscript (default: serve.exporter).")] = "",
    reward_model: Annotated[Path | None, typer.Option(
        help="Reward-model folder (`onerec align`, same codebook) the version carries: "
             "serving re-ranks each beam with it (RM selection).")] = None,
) -> None:
    """Export generation (encoder + beam search, one ONNX graph per beam width) as a model
    version: model.onnx, items.npy, manifest.json and the Triton config.pbtxt (and
    reward_model/ with --reward-model)."""
    from onerec.checkpoint import CheckpointError
    from onerec.export import export_version, load_trained
    from onerec.tokenizer.codebook import CodebookError

    if exporter not in ("", "auto", "dynamo", "torchscript"):
        raise fail(f"--exporter: must be auto, dynamo or torchscript, got {exporter!r}")
    try:
        model, space, cfg = load_trained(checkpoint, codebook)
    except (CheckpointError, CodebookError) as e:
        raise fail(str(e)) from None
    widths = beam_width or [cfg.serve.beam_width]
    try:
        with console.status(f"exporting beam widths {widths} ..."):
            path = export_version(model, space, cfg, out, model_name=model_name, version=version,
                                  beam_widths=widths, exporter=exporter or None,
                                  reward_model=reward_model)
    except ValueError as e:
        raise fail(str(e)) from None
    console.print(f"model version {path} (beam widths {widths}, config "
                  f"{cfg.fingerprint()}, codebook {space.fingerprint[:16]}"
                  f"{', carries its reward model' if reward_model else ''})", highlight=False)


def main() -> None:
    from onerec.runtime import reexec_with_tuned_env

    reexec_with_tuned_env("onerec.app.cli", None)  # malloc and OpenMP settings (onerec.runtime)
    app()


if __name__ == "__main__":
    main()
