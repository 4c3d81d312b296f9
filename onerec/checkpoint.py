"""Model checkpoints: the one module that writes, reads and rebuilds a trained OneRec.

Pretraining, alignment, the pipeline stages, export, serving and the benches all hand models to
each other as checkpoint folders, so the format has one writer and one reader; two loaders
that each rebuild the model drift apart (one forgets `n_user_buckets`, another the codebook
check), and then a model trains with one shape and serves with another.

A checkpoint is the folder `out_dir/checkpoint` (`CKPT_NAME`):

    state.pt     weights, optimizer, step, stream position, torch RNG state, vocab_sizes,
                 n_user_buckets (and what another loop needs to resume exactly: `extra_state`)
    config.yaml  the Config it was trained with (its model section rebuilds the model)
    meta.json    step, codebook and Config fingerprints, the stream's watermark (and `extra`)

- Written atomically (`onerec.io.atomic_dir`): the folder is built under a temporary name and
  swapped in, so a crash or a failed save leaves the previous checkpoint, never a torn one.
- Read with `weights_only` (`onerec.io.load_torch_state`): a state.pt swapped on the shared
  volume fails to load instead of running code. Every failure is a `CheckpointError` naming
  the folder and what is wrong with it.
- A checkpoint trained with another codebook is refused: its item indices and semantic IDs
  would name other videos. The error names both fingerprints.

The reward model's folder (`onerec.reward.io`) has the same three files; `write_folder` and
`read_folder` are shared with it so both artifacts fail the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from onerec.config import Config
from onerec.io import atomic_dir, load_torch_state
from onerec.model import OneRec

if TYPE_CHECKING:
    from onerec.stream import RequestStream

CKPT_NAME = "checkpoint"  # the checkpoint folder inside a training run's out_dir
MODEL_KEYS = ("model", "vocab_sizes", "n_user_buckets")  # what state.pt needs to rebuild a model


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or was made with another codebook or Config."""


class LoadedModel(NamedTuple):
    """A model rebuilt from a checkpoint, with the Config and user buckets it was trained on."""

    model: OneRec
    config: Config
    n_user_buckets: int


def build_model(cfg: Config, item_codes: torch.Tensor, vocab_sizes: list[int],
                n_user_buckets: int = 1) -> OneRec:
    """The OneRec model `cfg` describes over an item space (seeded by `train.seed`): training
    builds it fresh and `load_model` rebuilds it the same way, so the two cannot disagree."""
    torch.manual_seed(cfg.train.seed)
    return OneRec(cfg.model, item_codes=item_codes, vocab_sizes=vocab_sizes,
                  n_user_buckets=n_user_buckets, max_seq_len=cfg.data.max_seq_len,
                  max_pos_len=cfg.data.max_pos_seq_len)


# -- the folder: state.pt + config.yaml + meta.json --------------------------------------------
def write_folder(dest: str | Path, state: dict[str, Any], cfg: Config, meta: dict[str, Any],
                 json_default: Any = None) -> Path:
    """Write `dest` (state.pt, config.yaml, meta.json) atomically: all three or the old folder."""
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        torch.save(state, tmp / "state.pt")
        cfg.save(tmp / "config.yaml")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=json_default))
    return dest


def read_folder(path: str | Path, what: str = "checkpoint",
                error: type[ValueError] = CheckpointError) -> tuple[dict[str, Any], Any, Config]:
    """-> (meta, state, Config) of a folder `write_folder` wrote; `error` naming `what` and the
    folder when a file is missing or unreadable (corrupt pickle, JSON or YAML)."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        state = load_torch_state(path / "state.pt")
        cfg = Config.from_file(path / "config.yaml")
    except FileNotFoundError as e:
        raise error(f"{what} {path} is incomplete: missing {e.filename}") from None
    except Exception as e:  # corrupt pickle / JSON / YAML, or a pickle that would run code
        raise error(f"{what} {path} is unreadable ({type(e).__name__}: {e})") from None
    return meta, state, cfg


def check_codebook(path: str | Path, meta: dict[str, Any], codebook_fingerprint: str | None,
                   what: str = "checkpoint", error: type[ValueError] = CheckpointError) -> None:
    """Refuse a folder trained with another codebook than `codebook_fingerprint` (None: any)."""
    if codebook_fingerprint is None:
        return
    recorded = meta.get("codebook_fingerprint")
    if recorded is None:
        raise error(f"{what} {path} records no codebook fingerprint (meta.json), "
                    f"refusing codebook {codebook_fingerprint}")
    if recorded != codebook_fingerprint:
        raise error(f"{what} {path} was trained with codebook {recorded}, "
                    f"refusing codebook {codebook_fingerprint}")


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict's names and tensor bytes: the weights alone, so two runs that
    trained the same weights get the same digest whatever else their checkpoints record (the
    alignment's per-round history keeps wall times)."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(out_dir: str | Path, *, model: OneRec, opt: torch.optim.Optimizer, step: int,
                    stream: RequestStream, cfg: Config, codebook_fingerprint: str,
                    n_user_buckets: int, extra: dict[str, Any] | None = None,
                    extra_state: dict[str, Any] | None = None) -> Path:
    """Write `out_dir/checkpoint` atomically. `extra` joins meta.json; `extra_state` joins
    state.pt (tensors and plain values: what another loop needs to resume exactly, e.g. the
    alignment's sampler and generator), inside the same swap, so no crash pairs one step's
    weights with another step's state."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "stream": stream.state_dict(), "torch_rng": torch.get_rng_state(),
             "vocab_sizes": model.vocab_sizes, "n_user_buckets": n_user_buckets,
             **(extra_state or {})}
    meta = {"step": step, "codebook_fingerprint": codebook_fingerprint,
            "config_fingerprint": cfg.fingerprint(), "watermark_ms": stream.watermark_ms,
            **(extra or {})}
    return write_folder(Path(out_dir) / CKPT_NAME, state, cfg, meta)


def load_checkpoint(path: str | Path, codebook_fingerprint: str | None = None) -> dict[str, Any]:
    """Read a checkpoint folder -> {"meta", "state", "config"}; refuse one trained with another
    codebook than `codebook_fingerprint` (None: do not check)."""
    meta, state, cfg = read_folder(path)
    check_codebook(path, meta, codebook_fingerprint)
    return {"meta": meta, "state": state, "config": cfg}


def load_model(path: str | Path, codebook_fingerprint: str | None = None) -> LoadedModel:
    """A checkpoint folder -> the model it holds (eval mode, on the CPU), its Config and user
    buckets. The model is rebuilt from the checkpoint's own Config and item codes, so it has
    the shapes it was trained with; a checkpoint from another codebook is refused."""
    ck = load_checkpoint(path, codebook_fingerprint)
    state, cfg = ck["state"], ck["config"]
    missing = [k for k in MODEL_KEYS if k not in state]
    if missing or "item_codes" not in state["model"]:
        raise CheckpointError(f"checkpoint {path} is incomplete: state.pt has no "
                              f"{', '.join(missing or ['model.item_codes'])}")
    n_buckets = int(state["n_user_buckets"])
    model = build_model(cfg, state["model"]["item_codes"], state["vocab_sizes"], n_buckets)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: its weights do not fit the model its "
                              f"config.yaml describes ({e})") from None
    return LoadedModel(model.eval(), cfg, n_buckets)
