"""A model version folder: the contract between export and serving.

Layout (a Triton model repository, so the same folder serves locally and on Triton):

    <repo>/<model_name>/config.pbtxt          Triton config (ONNX Runtime backend) of the latest
                                              version: inputs, outputs, dynamic batching
    <repo>/<model_name>/<version>/model.onnx  generation at the default beam width
    <repo>/<model_name>/<version>/model_w<W>.onnx   one graph per other exported beam width
    <repo>/<model_name>/<version>/items.npy   int64 (n_items,): item index i + 1 -> video id
    <repo>/<model_name>/<version>/config.yaml the Config the model was trained with
    <repo>/<model_name>/<version>/manifest.json  identity and I/O contract (below)
    <repo>/<model_name>/<version>/reward_model/  optional: the P-Score reward model the model
                                              was aligned with (serving's RM selection)

`<version>` is a positive integer (Triton's rule); `export_version` takes the next free one
unless told. The version folder is built under a temporary name and renamed into place, so a
reader sees a complete version or none.

manifest.json fields (`Manifest`): format, model_name, version, created (UTC ISO time),
config_fingerprint, codebook_fingerprint, beam_widths, default_beam_width, top_n (the default
number of videos to return), graphs ({beam width: {file, width, sha256}}), inputs
([{name, dtype, shape}], "batch" = dynamic axis), outputs (same, for the default graph),
constrained, n_items, n_user_buckets, items_file, exporter, opset, moe, and reward_model
(null, or {dir, codebook_fingerprint, sha256: {file: digest}}: the version carries its reward
model, so the one a server re-ranks with always belongs to the version it serves).

Why serving can trust it: `load_manifest` checks every field is present with the right type,
that the named files exist, that each graph's sha256 matches (a swapped or torn model.onnx is
refused), and, when the caller passes the fingerprints it expects, that they match
(`FingerprintMismatch`, naming the field). items.npy lets serving map item indices back to
video ids without loading the codebook.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onerec.checkpoint import load_model
from onerec.config import Config
from onerec.export.onnx import (
    OPSET,
    export_onnx,
    input_specs,
    output_specs,
    resolve_exporter,
)
from onerec.export.triton import onnxruntime_config
from onerec.generate import MoEMode, level_widths
from onerec.io import atomic_dir, atomic_write_text
from onerec.io import sha256_file as sha256
from onerec.items import ItemSpace
from onerec.model import OneRec
from onerec.trie import ItemTrie

FORMAT = "onerec-model/1"
MANIFEST = "manifest.json"
ITEMS_FILE = "items.npy"


class ArtifactError(ValueError):
    """A model version folder is missing, incomplete or corrupt."""


class FingerprintMismatch(ArtifactError):
    """A version folder was made with another Config or codebook than the one expected."""


@dataclass
class Manifest:
    """What `manifest.json` holds; see the module docstring for the meaning of each field."""

    model_name: str
    version: int
    config_fingerprint: str
    codebook_fingerprint: str
    beam_widths: list[int]
    default_beam_width: int
    top_n: int
    graphs: dict[str, dict[str, Any]]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    constrained: bool
    n_items: int
    n_user_buckets: int
    created: str
    items_file: str = ITEMS_FILE
    exporter: str = "dynamo"
    opset: int = OPSET
    moe: str = "sparse"  # MoE form in the graph ("dense" for TensorRT)
    reward_model: dict[str, Any] | None = None  # the carried reward model (None: none)
    format: str = FORMAT
    path: Path | None = field(default=None, compare=False)  # the version folder (not saved)

    def graph_path(self, beam_width: int | None = None) -> Path:
        """The ONNX file for `beam_width` (default: the default beam width)."""
        w = str(beam_width or self.default_beam_width)
        if w not in self.graphs:
            raise ArtifactError(f"beam_width {w} was not exported (have {self.beam_widths})")
        assert self.path is not None  # nosec B101 # type narrowing
        return self.path / self.graphs[w]["file"]

    def item_ids(self) -> np.ndarray:
        assert self.path is not None  # nosec B101 # type narrowing
        return np.load(self.path / self.items_file)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "path"}


def graph_file(beam_width: int, default: int) -> str:
    return "model.onnx" if beam_width == default else f"model_w{beam_width}.onnx"


def next_version(model_dir: Path) -> int:
    have = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(have, default=0) + 1


def export_version(model: OneRec, space: ItemSpace, cfg: Config, repo_dir: str | Path, *,
                   model_name: str = "onerec", version: int | None = None,
                   beam_widths: tuple[int, ...] | list[int] | None = None,
                   constrained: bool = True, moe: MoEMode = "sparse",
                   exporter: str | None = None, max_batch_size: int = 64,
                   reward_model: str | Path | None = None) -> Path:
    """Export one model version into a Triton repository. Returns the version folder.

    beam_widths: graphs to export (default: serve.beam_width); the first is the default
    (`model.onnx`, the one Triton serves). Each must be in [1, serve.max_beam_width].
    version: default the next free integer; an existing version folder is replaced whole.
    exporter: auto, dynamo or torchscript; default `serve.exporter` (auto: TorchScript unless
    the encoder is causal).
    reward_model: a reward-model folder (same codebook) the version carries in
    `reward_model/`, so serving re-ranks each beam with it (RM selection); None: beam order.
    """
    widths = list(dict.fromkeys(beam_widths or [cfg.serve.beam_width]))
    chosen = resolve_exporter(exporter or cfg.serve.exporter, model)
    for w in widths:
        if not 1 <= w <= cfg.serve.max_beam_width:
            raise ValueError(f"beam_width {w} must be in [1, serve.max_beam_width="
                             f"{cfg.serve.max_beam_width}]")
    if not model_name or "/" in model_name or model_name.startswith("."):
        raise ValueError(f"model_name {model_name!r} must be a plain folder name")
    if model.vocab_sizes != space.vocab_sizes or model.item_codes.shape != space.codes.shape:
        raise ValueError("model and item space disagree (another codebook?): vocab "
                         f"{model.vocab_sizes} vs {space.vocab_sizes}")
    model_dir = Path(repo_dir) / model_name
    version = next_version(model_dir) if version is None else version
    if version < 1:
        raise ValueError(f"version must be >= 1 (Triton's rule), got {version}")
    trie = ItemTrie.from_codes(space.codes, space.vocab_sizes)
    identity = {"config_fingerprint": cfg.fingerprint(), "codebook_fingerprint": space.fingerprint,
                "model_name": model_name, "version": str(version)}
    graphs: dict[str, dict[str, Any]] = {}
    reward = None
    with atomic_dir(model_dir / str(version)) as tmp:
        if reward_model is not None:  # first: a reward model that cannot ship fails fast
            from onerec.reward import RM_NAME, copy_reward_model

            reward = copy_reward_model(reward_model, tmp / RM_NAME, space.fingerprint)
        for w in widths:
            name = graph_file(w, widths[0])
            export_onnx(model, trie, cfg, tmp / name, beam_width=w, constrained=constrained,
                        moe=moe, exporter=chosen, metadata=identity)
            width = level_widths(model.vocab_sizes, w)[-1]
            graphs[str(w)] = {"file": name, "width": width, "sha256": sha256(tmp / name)}
        np.save(tmp / ITEMS_FILE, np.asarray(space.item_ids, dtype=np.int64))
        cfg.save(tmp / "config.yaml")
        default_width = graphs[str(widths[0])]["width"]
        manifest = Manifest(
            model_name=model_name, version=version, config_fingerprint=cfg.fingerprint(),
            codebook_fingerprint=space.fingerprint, beam_widths=widths,
            default_beam_width=widths[0], top_n=min(cfg.serve.top_n, default_width),
            graphs=graphs, inputs=input_specs(cfg), outputs=output_specs(default_width),
            constrained=constrained,
            n_items=len(space), n_user_buckets=model.user_emb.num_embeddings,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), exporter=chosen,
            moe=moe, reward_model=reward)
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        make_readable(tmp)
    config = atomic_write_text(model_dir / "config.pbtxt",
                               onnxruntime_config(model_name, manifest.inputs, manifest.outputs,
                                                  max_batch_size=max_batch_size))
    make_readable(config)
    return model_dir / str(version)


def make_readable(path: Path) -> None:
    """World-readable files (0644) and folders (0755): the temporary files behind atomic writes
    are private (0600), but the server that loads a model version (Triton, KServe) usually runs
    as another user than the pipeline step that exported it."""
    path.chmod(0o755 if path.is_dir() else 0o644)
    if path.is_dir():
        for p in path.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str, "model_name": str, "version": int, "config_fingerprint": str,
    "codebook_fingerprint": str, "beam_widths": list, "default_beam_width": int, "top_n": int,
    "graphs": dict, "inputs": list, "outputs": list, "constrained": bool, "n_items": int,
    "n_user_buckets": int, "created": str, "items_file": str, "exporter": str, "opset": int,
}


def load_manifest(path: str | Path, *, config_fingerprint: str | None = None,
                  codebook_fingerprint: str | None = None, verify_files: bool = True) -> Manifest:
    """Read and check `<version>/manifest.json` (path: the version folder or the file).

    Raises `ArtifactError` naming the file or field that is missing or malformed, and
    `FingerprintMismatch` when an expected fingerprint differs from the recorded one.
    """
    path = Path(path)
    folder = path.parent if path.name == MANIFEST else path
    file = folder / MANIFEST
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{file}: missing (not a model version folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{file}: top level must be an object")
    for name, tp in _TYPES.items():
        if name not in raw:
            raise ArtifactError(f"{file}: missing field {name!r}")
        ok = isinstance(raw[name], tp) and not (tp is int and isinstance(raw[name], bool))
        if not ok:
            raise ArtifactError(f"{file}: field {name!r} has the wrong type "
                                f"({type(raw[name]).__name__}, expected {tp.__name__})")
    if raw.get("reward_model") is not None and not isinstance(raw["reward_model"], dict):
        raise ArtifactError(f"{file}: field 'reward_model' must be an object or null")
    if raw["format"] != FORMAT:
        raise ArtifactError(f"{file}: field 'format' is {raw['format']!r}, expected {FORMAT!r}")
    known = {f.name for f in dataclasses.fields(Manifest)} - {"path"}
    m = Manifest(**{k: v for k, v in raw.items() if k in known}, path=folder)
    if str(m.default_beam_width) not in m.graphs:
        raise ArtifactError(f"{file}: field 'graphs' has no entry for default_beam_width "
                            f"{m.default_beam_width}")
    for key, expected in (("config_fingerprint", config_fingerprint),
                          ("codebook_fingerprint", codebook_fingerprint)):
        if expected is not None and getattr(m, key) != expected:
            raise FingerprintMismatch(f"{file}: field {key!r} is {getattr(m, key)}, "
                                      f"expected {expected}: refusing this model version")
    if verify_files:
        _verify_files(m, file)
    return m


def _verify_files(m: Manifest, file: Path) -> None:
    assert m.path is not None  # nosec B101 # type narrowing
    for w, g in m.graphs.items():
        graph = m.path / str(g.get("file", ""))
        if not graph.is_file():
            raise ArtifactError(f"{file}: field 'graphs[{w}].file' names {graph.name}, "
                                "which is missing")
        if "sha256" in g and sha256(graph) != g["sha256"]:
            raise FingerprintMismatch(f"{graph}: sha256 differs from field 'graphs[{w}].sha256'"
                                      " in the manifest (corrupt or replaced graph)")
    items = m.path / m.items_file
    if not items.is_file():
        raise ArtifactError(f"{file}: field 'items_file' names {items.name}, which is missing")
    try:
        ids = np.load(items, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ArtifactError(f"{items}: not a readable .npy file ({e})") from None
    if ids.shape != (m.n_items,):
        raise ArtifactError(f"{items}: shape {ids.shape} does not match field 'n_items' "
                            f"({m.n_items})")
    if m.reward_model is not None:
        from onerec.reward import RewardModelError, check_copy

        try:
            check_copy(m.path, m.reward_model)
        except RewardModelError as e:
            raise ArtifactError(str(e)) from None


def load_trained(checkpoint: str | Path, codebook: str | Path,
                 device: str | torch.device = "cpu") -> tuple[OneRec, ItemSpace, Config]:
    """A trained model, its item space and Config from a checkpoint and codebook folder
    (`onerec.checkpoint.load_model` with the codebook's fingerprint).

    Refuses a checkpoint trained with another codebook (`CheckpointError`).
    """
    from onerec.tokenizer.codebook import Codebook

    space = ItemSpace.from_codebook(Codebook.load(codebook))
    model, cfg, _ = load_model(checkpoint, space.fingerprint)
    return model.to(device), space, cfg
