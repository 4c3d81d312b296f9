"""TensorRT FP16 engine from the exported ONNX graph (GPU serving on Triton's tensorrt_plan).

Two ways to build, same result:
- the TensorRT Python API (`import tensorrt`), when the package is installed (the TensorRT
  container of the export step on a GPU node);
- else the `trtexec` command line, when it is on PATH.
Neither exists on a CPU-only machine: `build_engine` then raises `TensorRTUnavailable` and the
ONNX Runtime path serves. The engine gets one optimisation profile over the batch axis
(min 1, opt, max = Triton's max_batch_size); the other axes are fixed by the Config. Export the
ONNX graph with `moe="dense"` for TensorRT: it avoids the data-dependent shapes (NonZero) of the
sparse expert dispatch. The plan is written atomically; `tensorrt_version` turns an exported
ONNX version folder into a Triton `tensorrt_plan` model version (model.plan + the same
manifest, items and config, and a TensorRT config.pbtxt).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess  # nosec B404 # argv lists only, no shell
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onerec.io import atomic_path


class TensorRTUnavailable(RuntimeError):
    """Neither the tensorrt Python package nor trtexec is available on this machine."""


def profile_shapes(inputs: list[dict[str, Any]], batch: int) -> dict[str, list[int]]:
    """Concrete input shapes for one batch size, from the manifest's input specs."""
    return {s["name"]: [batch if d == "batch" else int(d) for d in s["shape"]] for s in inputs}


def _shape_arg(shapes: dict[str, list[int]]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, dims))}" for name, dims in shapes.items())


def trtexec_command(onnx_path: str | Path, plan_path: str | Path, inputs: list[dict[str, Any]],
                    *, max_batch: int, opt_batch: int | None = None, fp16: bool = True,
                    workspace_mib: int = 4096, trtexec: str = "trtexec") -> list[str]:
    """The trtexec argument list that builds the engine (no shell quoting needed)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    opt = min(max_batch, opt_batch or max_batch)
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={plan_path}",
           f"--minShapes={_shape_arg(profile_shapes(inputs, 1))}",
           f"--optShapes={_shape_arg(profile_shapes(inputs, opt))}",
           f"--maxShapes={_shape_arg(profile_shapes(inputs, max_batch))}",
           f"--memPoolSize=workspace:{workspace_mib}M", "--skipInference"]
    if fp16:
        cmd.append("--fp16")
    return cmd


def build_engine(onnx_path: str | Path, plan_path: str | Path, inputs: list[dict[str, Any]], *,
                 max_batch: int, opt_batch: int | None = None, fp16: bool = True,
                 workspace_mib: int = 4096) -> Path:
    """Build an engine (Python API, else trtexec). Returns `plan_path`."""
    plan_path = Path(plan_path)
    if importlib.util.find_spec("tensorrt") is not None:
        with atomic_path(plan_path, suffix=".plan") as tmp:
            tmp.write_bytes(_build_with_api(Path(onnx_path), inputs, max_batch=max_batch,
                                            opt_batch=opt_batch, fp16=fp16,
                                            workspace_mib=workspace_mib))
        return plan_path
    exe = shutil.which("trtexec")
    if exe is None:
        raise TensorRTUnavailable("TensorRT is not installed (no `tensorrt` package, no trtexec "
                                  "on PATH): serve the ONNX graph instead")
    with atomic_path(plan_path, suffix=".plan") as tmp:
        cmd = trtexec_command(onnx_path, tmp, inputs, max_batch=max_batch, opt_batch=opt_batch,
                              fp16=fp16, workspace_mib=workspace_mib, trtexec=exe)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # nosec B603
        if done.returncode != 0:
            raise RuntimeError(f"trtexec failed ({done.returncode}): {done.stderr[-2000:]}")
    return plan_path


def _build_with_api(onnx_path: Path, inputs: list[dict[str, Any]], *, max_batch: int,
                    opt_batch: int | None, fp16: bool, workspace_mib: int) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    opt = min(max_batch, opt_batch or max_batch)
    lo, mid, hi = (profile_shapes(inputs, b) for b in (1, opt, max_batch))
    for name in lo:
        profile.set_shape(name, lo[name], mid[name], hi[name])
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(engine)


def tensorrt_version(version_dir: str | Path, repo_dir: str | Path, *,
                     model_name: str = "onerec_trt", max_batch: int = 64,
                     opt_batch: int | None = None, fp16: bool = True,
                     builder: Callable[..., Path] = build_engine) -> Path:
    """A Triton `tensorrt_plan` model version built from an exported ONNX version folder.

    `<repo>/<model_name>/<version>/` gets model.plan (the engine of the default beam width)
    beside copies of model.onnx, items.npy, config.yaml, the reward model if it carries one and
    the manifest (with an "engine" entry added), so serving checks it exactly like the ONNX version; `<repo>/<model_name>/
    config.pbtxt` is the TensorRT config. Returns the new version folder.
    """
    from onerec.export.artifact import MANIFEST, load_manifest, make_readable, sha256
    from onerec.export.triton import tensorrt_config
    from onerec.io import atomic_dir, atomic_write_text

    m = load_manifest(version_dir)
    assert m.path is not None  # nosec B101 # type narrowing
    dest = Path(repo_dir) / model_name / str(m.version)
    with atomic_dir(dest) as tmp:
        plan = builder(m.graph_path(), tmp / "model.plan", m.inputs, max_batch=max_batch,
                       opt_batch=opt_batch, fp16=fp16)
        for name in {m.graphs[str(m.default_beam_width)]["file"], m.items_file, "config.yaml"}:
            if (m.path / name).exists():
                shutil.copy2(m.path / name, tmp / name)
        if m.reward_model is not None:  # RM selection travels with the version
            shutil.copytree(m.path / m.reward_model["dir"], tmp / m.reward_model["dir"])
        raw = json.loads((m.path / MANIFEST).read_text())
        raw["graphs"] = {str(m.default_beam_width): raw["graphs"][str(m.default_beam_width)]}
        raw["beam_widths"] = [m.default_beam_width]
        raw["model_name"] = model_name
        raw["engine"] = {"file": "model.plan", "precision": "fp16" if fp16 else "fp32",
                         "max_batch": max_batch, "sha256": sha256(Path(plan))}
        (tmp / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
        make_readable(tmp)
    config = atomic_write_text(Path(repo_dir) / model_name / "config.pbtxt",
                               tensorrt_config(model_name, m.inputs, m.outputs,
                                               max_batch_size=max_batch))
    make_readable(config)
    return dest
