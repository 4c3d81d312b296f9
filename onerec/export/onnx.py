"""The whole generation as one ONNX graph: encoder once, then the L beam-search steps unrolled.

Graph contract (`GRAPH_INPUTS` / `GRAPH_OUTPUTS`, recorded in every manifest):
- inputs, all int64: `user` [B] (user-feature bucket, in [0, n_user_buckets)), `short` [B, S],
  `pos` [B, P], `long` [B, G] item indices (0 = padding, left-padded, most recent last), with
  S = data.max_seq_len, P = data.max_pos_seq_len, G = data.max_long_seq_len fixed by the Config;
  B is the one dynamic axis ("batch");
- outputs: `items` int64 [B, W] item indices (1-based as in `ItemSpace`; 0 where a beam is no
  legal item) and `scores` float32 [B, W] log-probabilities (-inf for dead beams), best first,
  where W = the last level's beam count (min(beam_width, prod K_l)).

Choices:
- The beam width is fixed per graph: with a width-as-input the per-level widths
  min(W, w x K_l) and every reshape after TopK become data-dependent, which neither exporter nor
  TensorRT handles cleanly. One graph per beam width is exported instead (the artifact keeps
  several; each records its width in its metadata).
- Exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript) by default: the
  maintained path, and its graph is leaner (about 1.3k nodes for the shipped-data model, 2.5x
  fewer than TorchScript's before ONNX Runtime's own folding). `exporter="torchscript"` (the
  deprecated tracer) is kept because it exports 5-10x faster (seconds, not tens of seconds);
  both are tested equal to PyTorch (torchscript refuses `model.causal_encoder`: its boolean
  Where has no ONNX Runtime kernel). Opset 20, so GELU stays one node. The graph is written as
  one file (no external data: it is far below 2 GB) so a version folder is self-contained.
- The trie tables are buffers of the `Generator`, so they become initializers: the graph needs
  no codebook at run time. The MoE layers export in the generator's "sparse" form by default
  (NonZero/ScatterND, exact top-k compute); `moe="dense"` avoids data-dependent shapes for
  runtimes that dislike them (TensorRT).
- Files are written with `atomic_path`, checked with `onnx.checker`, and carry their identity
  (config and codebook fingerprints, beam width) as metadata_props.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from onerec.config import Config
from onerec.generate import Generator, MoEMode
from onerec.io import atomic_path
from onerec.model import Batch, OneRec
from onerec.trie import ItemTrie

GRAPH_INPUTS = ("user", "short", "pos", "long")
GRAPH_OUTPUTS = ("items", "scores")
OPSET = 20
Exporter = Literal["dynamo", "torchscript"]


class GenerationGraph(nn.Module):
    """The exported module: (user, short, pos, long) -> (items, scores)."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator.eval()

    def forward(self, user: torch.Tensor, short: torch.Tensor, pos: torch.Tensor,
                long: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items, scores, _ = self.generator(user, short, pos, long)
        return items, scores


def input_specs(cfg: Config) -> list[dict]:
    """Name, dtype and shape ("batch" = the dynamic axis) of each graph input."""
    d = cfg.data
    return [{"name": "user", "dtype": "int64", "shape": ["batch"]},
            {"name": "short", "dtype": "int64", "shape": ["batch", d.max_seq_len]},
            {"name": "pos", "dtype": "int64", "shape": ["batch", d.max_pos_seq_len]},
            {"name": "long", "dtype": "int64", "shape": ["batch", d.max_long_seq_len]}]


def output_specs(width: int) -> list[dict]:
    return [{"name": "items", "dtype": "int64", "shape": ["batch", width]},
            {"name": "scores", "dtype": "float32", "shape": ["batch", width]}]


def example_inputs(cfg: Config, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Zero (all-padding) inputs of the graph's shapes; B=2 so the batch axis stays symbolic."""
    return tuple(torch.zeros([batch if s == "batch" else s for s in spec["shape"]],
                             dtype=torch.long) for spec in input_specs(cfg))


def resolve_exporter(choice: str, model: OneRec) -> Exporter:
    """`serve.exporter` -> the exporter to run. auto: TorchScript (an order of magnitude faster
    to export here) unless the model has a causal encoder, whose TorchScript graph ONNX Runtime
    cannot run; then dynamo."""
    if choice == "auto":
        return "dynamo" if model.cfg.causal_encoder else "torchscript"
    if choice not in ("dynamo", "torchscript"):
        raise ValueError(f"serve.exporter: must be auto, dynamo or torchscript, got {choice!r}")
    return choice  # type: ignore[return-value]


def export_onnx(model: OneRec, trie: ItemTrie, cfg: Config, path: str | Path, *,
                beam_width: int, constrained: bool = True, moe: MoEMode = "sparse",
                exporter: Exporter = "dynamo", metadata: dict[str, str] | None = None) -> Path:
    """Export generation at `beam_width` to one ONNX file (atomically). Returns the path."""
    import onnx

    path = Path(path)
    if exporter == "torchscript" and model.cfg.causal_encoder:
        raise ValueError("model.causal_encoder: the torchscript exporter emits a boolean Where "
                         "that ONNX Runtime cannot run; use exporter='dynamo'")
    if next(model.parameters()).device.type != "cpu" or model.bos.dtype != torch.float32:
        model = copy.deepcopy(model).cpu().float()  # export traces on CPU in float32
    gen = Generator(model, trie.to("cpu"), beam_width=beam_width,
                    constrained=constrained, moe=moe)
    graph = GenerationGraph(gen).eval()
    with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")  # exporter chatter (tracer warnings, deprecations)
        proto = _EXPORTERS[exporter](graph, example_inputs(cfg))
    meta = {"beam_width": str(beam_width), "width": str(gen.widths()[-1]),
            "constrained": str(constrained).lower(), "moe": moe, "exporter": exporter,
            **(metadata or {})}
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def _dynamo(graph: nn.Module, args: tuple[torch.Tensor, ...]):  # -> onnx.ModelProto
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(graph, args, input_names=list(GRAPH_INPUTS),
                                output_names=list(GRAPH_OUTPUTS),
                                dynamic_shapes={name: {0: batch} for name in GRAPH_INPUTS},
                                opset_version=OPSET, dynamo=True, optimize=True, verbose=False)
    return program.model_proto


def _torchscript(graph: nn.Module, args: tuple[torch.Tensor, ...]):  # -> onnx.ModelProto
    import onnx

    buf = io.BytesIO()
    torch.onnx.export(graph, args, buf, input_names=list(GRAPH_INPUTS),
                      output_names=list(GRAPH_OUTPUTS), opset_version=OPSET, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in (*GRAPH_INPUTS, *GRAPH_OUTPUTS)})
    return onnx.load_from_string(buf.getvalue())


_EXPORTERS = {"dynamo": _dynamo, "torchscript": _torchscript}


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def graph_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (its identity), without loading the weights."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def ort_session(path: str | Path, threads: int | None = None):  # -> onnxruntime.InferenceSession
    """A CPU ONNX Runtime session with all graph optimisations, `threads` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """Run a session on a Batch -> items (B, W) int64, scores (B, W) float32."""
    feed = {name: getattr(batch, name).cpu().numpy().astype(np.int64) for name in GRAPH_INPUTS}
    items, scores = session.run(list(GRAPH_OUTPUTS), feed)
    return items, scores
