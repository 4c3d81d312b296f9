"""The local server: one KServe ModelServer with the transformer and the predictor.

    python -m serving.server --repo runs/model_repo [--feature_repo runs/feature_repo]
        [--http_port 8080] [--grpc_port 8081] [--config FILE | --preset NAME] [--set k=v ...]

(`onerec serve` calls `main` with the same options.) The parser takes KServe's own ModelServer
parser as its parent, as KServe's custom-model samples do, so every ModelServer option
(--workers, --max_threads, --enable_grpc, ...) works here too.

Two models are registered on one server, sharing one `VersionManager`:
- `<model>`: the transformer (user id -> video ids; `serving.transformer`);
- `<model>-graph`: the raw graph (`serving.predictor`), what Triton serves in the cluster.
With `--predictor_host` (the InferenceService transformer) only the transformer runs: it loads
each version's manifest and item table (no ONNX Runtime, no graph files needed) and sends the
graph inputs to the remote predictor's `--graph_name` (default: the model name, as KServe names
a transformer and its predictor alike) over `--predictor_protocol` v2 or grpc-v2.

The server answers liveness at once and loads the model in a background thread: the models'
readiness (`/v2/models/<model>/ready`) turns true only once a version is loaded, as a
Kubernetes readiness probe expects. A folder watcher (`--poll_interval`) and the repository
extension's load call (`POST /v2/repository/models/<model>/load`, tritonclient `load_model`)
swap in newer versions; `GET /onerec/versions` shows the active version, refusals and the
reranker serving it.

Reranking: a version that carries its reward model serves OneRec with RM selection (the
behaviour model's winner, `serve.rm_selection`, on by default); `--rm_selection PATH` or
`--reranker module:fn` (exclusive) override every version's own; `--set serve.rm_selection=
false` serves beam order. Each swap logs which reranker serves the new version.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from onerec.config import Config, ConfigError
from serving.limits import BodyLimits, grpc_receive_limit
from serving.limits import install as install_limits
from serving.repository import Expected, VersionRefused, read_cold_start
from serving.schema import Limits

log = logging.getLogger("onerec.serving")
STATUS_ROUTE = "/onerec/versions"


def build_parser() -> argparse.ArgumentParser:
    from kserve import model_server

    p = argparse.ArgumentParser(parents=[model_server.parser], prog="onerec-serve",
                                description="OneRec on a KServe ModelServer (v2 REST + gRPC).")
    p.add_argument("--repo", type=Path, required=True,
                   help="Triton model repository (<repo>/<model>/<version>/model.onnx)")
    p.add_argument("--feature_repo", type=Path, default=None,
                   help="rendered Feast repo: read user sequences online (default: none, "
                        "histories come in the request)")
    p.add_argument("--config", type=Path, default=None, help="Config YAML (limits: serve.*)")
    p.add_argument("--preset", default=None, help="tiny | small | base")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="dotted Config override, e.g. serve.max_top_n=50")
    p.add_argument("--codebook", type=Path, default=None,
                   help="codebook folder: versions must carry its fingerprint (default: the "
                        "first version loaded pins it)")
    p.add_argument("--config_fingerprint", default=None,
                   help="versions must carry this Config fingerprint (default: first loaded)")
    p.add_argument("--cold_start", type=Path, default=None,
                   help="cold-start table JSON (default: <version>/cold_start.json)")
    p.add_argument("--cold_start_data", type=Path, default=None,
                   help="KuaiRand-layout data folder: build the cold-start table at start from "
                        "its last days' most engaged videos (when no --cold_start)")
    p.add_argument("--reranker", default=None,
                   help="module:function reranking each beam, overriding each version's own "
                        "(default: the version's RM selection, else generator order)")
    p.add_argument("--rm_selection", type=Path, default=None,
                   help="reward-model folder (onerec align): re-rank each beam by P-Score "
                        "(OneRec with RM selection), overriding each version's own reward "
                        "model")
    p.add_argument("--feast_timeout", type=float, default=1.0,
                   help="seconds a Feast online read may take before its users are served "
                        "without online features (the store is then probed in the background)")
    p.add_argument("--feast_retry", type=float, default=2.0,
                   help="seconds between probes of an unavailable Feast online store")
    p.add_argument("--poll_interval", type=float, default=2.0,
                   help="seconds between scans for new versions (0: only explicit reload)")
    p.add_argument("--graph_name", default=None,
                   help="model name of the graph: served here as <model>-graph, or the remote "
                        "predictor's (with --predictor_host; default: --model_name, KServe's "
                        "convention for a transformer and its predictor)")
    p.add_argument("--ort_threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads per graph (0: its default, every core) "
                        "[default: serve.ort_threads of the Config, 1]")
    p.add_argument("--host", default=None,
                   help="address the REST and gRPC listeners bind (0.0.0.0: every interface, "
                        "as the container does) [default: serve.host of the Config, 127.0.0.1]")
    # None: serve.max_request_bytes (the REST body limit) is gRPC's receive limit too
    p.set_defaults(model_name=None, http_port=None, grpc_port=None,
                   grpc_max_receive_message_length=None)
    return p


def model_dir_of(repo: Path, name: str | None) -> tuple[str, Path]:
    """(model name, <repo>/<model>): the one model folder when no name is given."""
    if name:
        return name, repo / name
    models = sorted(p.name for p in repo.iterdir() if p.is_dir()) if repo.is_dir() else []
    if len(models) > 1:
        raise ConfigError(f"--repo {repo}: holds {', '.join(models)}; pick one with "
                          f"--model_name")
    name = models[0] if models else "onerec"
    return name, repo / name


def cold_start_table(args: argparse.Namespace, cfg: Config) -> Any:
    """--cold_start FILE, else popular videos of --cold_start_data, else None (each version's
    own cold_start.json then applies)."""
    if args.cold_start is not None:
        return read_cold_start(args.cold_start)
    if args.cold_start_data is None:
        return None
    import numpy as np

    from onerec.data import kuairand
    from serving.repository import popular_videos

    events = kuairand.load(args.cold_start_data).events
    ids = popular_videos(events, n=cfg.serve.max_top_n, last_days=cfg.data.test_days)
    log.info("cold-start table: %d popular videos of %s", len(ids), args.cold_start_data)
    return np.asarray(ids, dtype=np.int64)


def reranker_of(args: argparse.Namespace, codebook_fp: str | None, top_m: int = 0,
                code_cap: int = 0) -> Any:
    """The command line's reranker, which overrides each version's own: --rm_selection (the
    reward model; it re-ranks each beam's first `top_m`, 0: all, with at most `code_cap` picks
    per first-level semantic ID, 0: no cap) or --reranker
    (module:function), not both; None when neither is given."""
    from serving.transformer import load_reranker

    if args.rm_selection is not None:
        if args.reranker:
            raise SystemExit("--rm_selection and --reranker are exclusive: pass one")
        from serving.rm_selection import RMSelection

        return RMSelection.load(args.rm_selection, codebook_fp, top_m=top_m or None,
                                code_cap=code_cap or None)
    return load_reranker(args.reranker) if args.reranker else None


def versions_rerank(cfg: Config, override: Any) -> bool:
    """Whether each version's own reward model is loaded as its reranker: serve.rm_selection
    is on and the command line gives no reranker (one that would override it anyway)."""
    return bool(cfg.serve.rm_selection) and override is None


def build(args: argparse.Namespace) -> tuple[Any, list[Any], Any, BodyLimits]:
    """-> (ModelServer, [transformer, predictor], VersionManager, body limits); nothing
    loaded yet."""
    from kserve import ModelServer, model_server
    from kserve.model_repository import ModelRepository

    from serving import metrics
    from serving.predictor import GraphPredictor
    from serving.transformer import OneRecTransformer, describe
    from serving.versions import VersionManager

    cfg = Config.load(args.config, args.preset, args.overrides)
    limits = Limits.from_config(cfg.serve)
    body_limits = BodyLimits.from_config(cfg.serve)
    # kserve's GRPCServer reads its options from model_server.args when it starts
    model_server.args.grpc_max_receive_message_length = (
        args.grpc_max_receive_message_length or grpc_receive_limit(body_limits))
    name, model_dir = model_dir_of(args.repo, args.model_name)
    codebook_fp = None
    if args.codebook is not None:
        from onerec.tokenizer.codebook import Codebook

        codebook_fp = Codebook.load(args.codebook).fingerprint
    models: list[Any] = []

    def on_swap(old: Any, new: Any) -> None:
        metrics.MODEL_VERSION.set(new.version)
        metrics.SWAPS.inc()
        rerank = models[0].reranker_for(new)  # the transformer's, for this version
        metrics.RM_SELECTION.set(int(getattr(rerank, "wants_contexts", False)))
        log.info("model version %s re-ranks with %s", new.version, describe(rerank))
        for m in models:  # load() sets ready (the predictor's cannot re-enter the swap)
            m.load()

    def on_refuse(version: int, reason: str) -> None:
        metrics.REFUSED.labels(version=str(version)).inc()

    remote = bool(args.predictor_host)  # the cluster: the graph runs on Triton
    override = reranker_of(args, codebook_fp, cfg.serve.rm_selection_top_m,
                           cfg.serve.rm_selection_code_cap)
    manager = VersionManager(model_dir, expected=Expected(args.config_fingerprint, codebook_fp),
                             threads=cfg.serve.ort_threads if args.ort_threads is None
                             else args.ort_threads, sessions=not remote,
                             rm_selection=versions_rerank(cfg, override),
                             rm_top_m=cfg.serve.rm_selection_top_m,
                             rm_code_cap=cfg.serve.rm_selection_code_cap,
                             on_swap=on_swap, on_refuse=on_refuse)
    graph_name = args.graph_name or (name if remote else f"{name}-graph")
    transformer = OneRecTransformer(
        name, manager, limits, feature_repo=args.feature_repo,
        cold_start=cold_start_table(args, cfg), reranker=override, graph_name=graph_name,
        feast_timeout_s=args.feast_timeout, feast_retry_s=args.feast_retry)
    models.append(transformer)
    if not remote:
        models.append(GraphPredictor(graph_name, manager, limits))

    class Repository(ModelRepository):
        """KServe's repository extension: `load` = reload the newest acceptable version."""

        async def load(self, model_name: str) -> bool:
            # tritonclient's gRPC load_model sends the name in Triton's field 2, which
            # kserve 0.21's proto reads as field 1 (repository_name): it arrives empty
            model_name = model_name or transformer.name
            if self.get_model(model_name) is None:
                from kserve.errors import ModelNotFound

                raise ModelNotFound(model_name)
            await asyncio.to_thread(manager.reload)
            return True

        async def is_model_ready(self, name: str) -> bool:
            return await super().is_model_ready(name or transformer.name)

    repository = Repository(models_dir=str(model_dir))
    from serving.bind import bind

    bind(args.host or cfg.serve.host)
    server = ModelServer(
        http_port=args.http_port or cfg.serve.http_port,
        grpc_port=args.grpc_port or cfg.serve.grpc_port,
        workers=1, max_threads=args.max_threads, max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc, enable_latency_logging=args.enable_latency_logging,
        registered_models=repository)
    for m in models:
        server.register_model(m)
    return server, models, manager, body_limits


def kserve_shims(server: Any) -> None:
    """Make kserve 0.21's gRPC RepositoryModelLoad usable (tritonclient `load_model`):
    - its servicer subscripts the extension's `load()` result, which is None: return the
      dict the REST endpoint builds itself;
    - its interceptor reads `ModelNotReady.reason`, which the class lacks, so a refused
      reload would come back as UNKNOWN without its message;
    - its binary REST decoder indexes the JSON header unchecked (HTTP 500 on a malformed
      one): the DataPlane becomes `serving.guards.GuardedDataPlane`.
    (The empty model name tritonclient's request arrives with is handled in `Repository`.)"""
    from kserve.errors import ModelNotReady
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    class Extension(ModelRepositoryExtension):
        async def load(self, model_name: str) -> dict:  # type: ignore[override]
            await super().load(model_name)
            return {"name": model_name, "load": True}

    server.model_repository_extension = Extension(model_registry=server.registered_models)
    from serving import guards

    guards.install(server)  # binary REST headers checked before kserve's decoder indexes them
    if not hasattr(ModelNotReady, "reason"):
        ModelNotReady.reason = property(lambda self: str(self))  # type: ignore[attr-defined]


def add_routes(manager: Any, body_limits: BodyLimits | None = None,
               features: Any = None) -> None:
    """GET /onerec/versions (active version, refusals; `features`: the transformer, whose
    Feast online store state and the reranker serving the active version are added),
    v2-style 400s for bad JSON, and the request limits checked before a body is parsed
    (`serving.limits`)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve import model_server
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def versions() -> dict:
        out = manager.status()
        online = getattr(features, "online", None)
        if online is not None:
            out["features"] = online.status()
        active = manager.current
        if active is not None and hasattr(features, "reranker_for"):
            from serving.transformer import describe

            out["reranker"] = describe(features.reranker_for(active))
        return out

    async def bad_request(_: Any, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [x for x in first.get("loc", ()) if x != "body"]
        where = (f"character {loc[0]}" if len(loc) == 1 and isinstance(loc[0], int)
                 else ".".join(str(x) for x in loc))
        msg = f"malformed request: {first.get('msg', 'invalid body')}"
        return JSONResponse(status_code=400,
                            content={"error": f"{msg} at {where}" if where else msg})

    async def http_error(_: Any, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals ("There was an error parsing the body", 404, 405) in the v2
        # protocol's {"error": ...} shape rather than {"detail": ...}
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)},
                            headers=getattr(exc, "headers", None))

    model_server.app.add_api_route(STATUS_ROUTE, versions, methods=["GET"])
    model_server.app.add_exception_handler(RequestValidationError, bad_request)
    model_server.app.add_exception_handler(StarletteHTTPException, http_error)
    install_limits(model_server.app, body_limits or BodyLimits())


def load_in_background(models: list[Any], manager: Any, poll_s: float) -> threading.Thread:
    """The first load off the event loop; then the folder watcher."""

    def run() -> None:
        try:
            manager.refresh()
            for m in models:
                m.load()
            if manager.current is None:
                log.warning("no servable version in %s yet; waiting for one", manager.model_dir)
        except Exception:
            log.exception("initial model load failed")
        manager.watch(poll_s)

    t = threading.Thread(target=run, name="onerec-initial-load", daemon=True)
    t.start()
    return t


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # kserve.model_server parses sys.argv with parse_known_args when imported, where our
    # `--config` would pass for an abbreviation of its `--configure_logging`: import it on an
    # empty command line, parse ours (with its parser as parent), then hand it the values
    sys.argv = sys.argv[:1]
    from kserve import model_server

    args = build_parser().parse_args(argv)
    for key in vars(model_server.args):
        setattr(model_server.args, key, getattr(args, key))
    try:
        server, models, manager, body_limits = build(args)
    except (ConfigError, VersionRefused, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    kserve_logger = logging.getLogger("kserve")
    log.handlers, log.propagate = list(kserve_logger.handlers), False
    log.setLevel(logging.INFO)
    kserve_shims(server)
    try:
        models[0].open_features()  # the transformer; see its docstring for why here
    except Exception as e:  # FeaturesError, or feast missing
        print(f"error: --feature_repo: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    add_routes(manager, body_limits, features=models[0])
    load_in_background(models, manager, args.poll_interval)
    server.start([])


if __name__ == "__main__":
    main()
