"""`onerec tokenize`: fit a semantic-ID codebook for a dataset, or refresh an existing one.

The main CLI (`onerec/app/cli.py`) calls `register(app)`; `python -m onerec.app.tokenizer_cli`
runs the command on its own. Bad input (unknown dataset, missing folder, bad config key, corrupt
codebook) prints one red line naming the problem and exits with status 2, no stack trace.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from onerec.config import Config, ConfigError, TokenizerConfig
from onerec.data.schema import DataError
from onerec.tokenizer.build import fit_codebook, refresh
from onerec.tokenizer.codebook import Codebook, CodebookError
from onerec.tokenizer.embeddings import DEFAULT_DIRS, ItemEmbedder, load_catalogue
from onerec.tokenizer.rq_kmeans import TokenizerError

console = Console()
DATASETS = ("kuairand", "beauty", "microlens")


def metrics_table(metrics: dict, title: str) -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key in ("n_items", "n_semantic_ids", "collision_rate", "items_per_id_mean",
                "items_per_id_max", "reconstruction_error", "fit_seconds"):
        if key in metrics:
            v = metrics[key]
            t.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    for key in ("utilisation", "entropy_normalised"):
        if key in metrics:
            t.add_row(key, " / ".join(f"{v:.3f}" for v in metrics[key]))
    return t


def build_codebook(cfg: Config, dataset: str, data_dir: Path, out: Path) -> Codebook:
    """Embed the catalogue, fit RQ-Kmeans, save the codebook folder atomically at `out`."""
    cat = load_catalogue(dataset, data_dir)
    console.print(f"[bold]{dataset}[/]: {len(cat)} items, {len(cat.sequences)} user sequences")
    t0 = time.perf_counter()
    embedder = ItemEmbedder(cfg.tokenizer)
    emb = embedder.fit_transform(cat, progress=True)
    console.print(f"embeddings: {emb.vectors().shape} in {time.perf_counter() - t0:.1f}s")
    with Progress(transient=True) as bar:
        task = bar.add_task("RQ-Kmeans levels", total=cfg.tokenizer.levels)
        cb = fit_codebook(emb.vectors(), emb.item_ids, cfg.tokenizer,
                          config_fingerprint=cfg.fingerprint(),
                          on_level=lambda _lvl: bar.advance(task))
    arrays, meta = embedder.to_state()
    cb.save(out, extra_arrays={"embedder": arrays}, extra_json={"embedder": meta})
    return cb


def _refresh(cfg: Config, dataset: str, data_dir: Path, out: Path) -> Codebook:
    old = Codebook.load(out)
    fitted_cfg = TokenizerConfig(**{k: v for k, v in old.settings.items()
                                    if k in TokenizerConfig.__dataclass_fields__})
    embedder = ItemEmbedder.load(fitted_cfg, out)
    cat = load_catalogue(dataset, data_dir)
    new_ids = cat.item_ids[~np.isin(cat.item_ids, old.item_ids)]
    console.print(f"codebook v{old.version}.{old.revision}: {old.n_items} items; "
                  f"{dataset} has {len(new_ids)} new item(s)")
    x_new = embedder.transform(cat, new_ids, progress=True).vectors()
    refit_embedder = ItemEmbedder(cfg.tokenizer)

    def refit_data() -> tuple[np.ndarray, np.ndarray]:
        emb = refit_embedder.fit_transform(cat, progress=True)
        return emb.item_ids, emb.vectors()

    res = refresh(old, new_ids, x_new, cfg.tokenizer, refit_data,
                  config_fingerprint=cfg.fingerprint())
    d = res.drift
    console.print(f"drift {d.drift:+.3f} (new-item error {d.reconstruction_error_new:.4f} vs fit "
                  f"{d.reconstruction_error_fit:.4f}; threshold {d.threshold}); level-1 "
                  f"utilisation ratio {d.utilisation_ratio:.2f} (refit below "
                  f"{d.min_utilisation_ratio})")
    if res.refit:
        arrays, meta = refit_embedder.to_state()
        res.codebook.save(out, extra_arrays={"embedder": arrays},
                          extra_json={"embedder": meta, "mapping": res.mapping})
        console.print(f"[yellow]refit[/]: version {old.version} -> {res.codebook.version}; "
                      f"mapping of {res.mapping['n_common']} items in {out / 'mapping.json'}")
    elif len(res.new_item_ids):
        arrays, meta = embedder.to_state()
        res.codebook.save(out, extra_arrays={"embedder": arrays}, extra_json={"embedder": meta})
        console.print(f"encoded {len(res.new_item_ids)} new item(s); existing IDs unchanged "
                      f"(revision {res.codebook.revision})")
    else:
        console.print("nothing new; codebook unchanged")
    return res.codebook


def tokenize(
    config: Path | None = typer.Option(None, "--config", help="YAML config file"),
    preset: str | None = typer.Option(None, "--preset", help="tiny | small | base"),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="dotted override, e.g. tokenizer.codebook_size=128"),
    dataset: str | None = typer.Option(
        None, "--dataset", help="kuairand | beauty | microlens (default: data.dataset)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="dataset folder"),
    out: Path = typer.Option(Path("runs/codebook"), "--out", help="codebook folder"),
    do_refresh: bool = typer.Option(False, "--refresh", help="encode new items into the "
                                    "codebook at --out; refit if drift exceeds the threshold"),
) -> None:
    """Build semantic IDs (RQ-Kmeans over item embeddings), or refresh an existing codebook."""
    try:
        cfg = Config.load(config, preset, overrides)
        name = dataset or cfg.data.dataset
        if name not in DATASETS:
            raise ConfigError(f"--dataset: must be one of {list(DATASETS)}, got {name!r}")
        if data_dir is None:
            data_dir = Path(cfg.data.data_dir if name == cfg.data.dataset else DEFAULT_DIRS[name])
        cb = (_refresh if do_refresh else build_codebook)(cfg, name, data_dir, out)
    except (ConfigError, DataError, TokenizerError, CodebookError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(metrics_table(cb.metrics, f"codebook v{cb.version}.{cb.revision} -> {out}"))
    console.print(f"fingerprint {cb.fingerprint}")


def register(app: typer.Typer) -> None:
    """Add the `tokenize` command to the main CLI."""
    app.command("tokenize")(tokenize)

app = typer.Typer(add_completion=False)
register(app)

if __name__ == "__main__":
    app()
