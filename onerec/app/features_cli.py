"""`onerec features apply|materialize|push|get`: the feature repo from the command line.

The main CLI (`onerec/app/cli.py`) calls `register(app)`; `python -m onerec.app.features_cli`
runs the group on its own. Feast is imported inside the commands, so the rest of the CLI starts
without the `features` extra. Errors a user can fix (bad config key, missing data folder, repo not
applied, unknown service) print one red line and exit 2.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from onerec.app.cli_options import ConfigOpt, PresetOpt, SetOpt, load_config
from onerec.config import Config, ConfigError
from onerec.data.schema import DataError, Dataset

console = Console()
features_app = typer.Typer(help="Feast features: user sequences online and offline.",
                           no_args_is_help=True)

RepoOpt = typer.Option(None, "--repo", help="rendered repo folder (default: features.repo_dir)")


def _fail(e: Exception) -> typer.Exit:
    console.print(f"[red]error:[/] {e}")
    return typer.Exit(2)


def _setup(config: Path | None, preset: str | None, overrides: list[str] | None,
           repo: Path | None) -> tuple[Config, Path]:
    cfg = load_config(config, preset, overrides)
    return cfg, Path(repo or cfg.features.repo_dir)


def load_events_dataset(cfg: Config, data_dir: Path | None = None) -> Dataset:
    """The impression dataset of data.dataset (kuairand or synthetic: the ones with events)."""
    if cfg.data.dataset == "synthetic":
        from onerec.data.synthetic import make_dataset
        return make_dataset(cfg.data)
    if cfg.data.dataset != "kuairand":
        raise ConfigError(f"data.dataset: features need impression events (kuairand or "
                          f"synthetic), got {cfg.data.dataset!r}")
    from onerec.data import kuairand
    return kuairand.load(data_dir or cfg.data.data_dir)


@features_app.command("apply")
def apply_cmd(config: ConfigOpt = None, preset: PresetOpt = None,
              overrides: SetOpt = None, repo: Path | None = RepoOpt,
              data_dir: Path | None = typer.Option(None, "--data-dir", help="dataset folder"),
              events: int | None = typer.Option(
                  None, "--events", help="backfill the first N events (default: "
                  "features.backfill_events; the rest can be pushed)"),
              codebook: Path | None = typer.Option(None, "--codebook",
                                                   help="codebook folder for semantic IDs"),
              ) -> None:
    """Render the repo into a run folder, backfill its offline store, and `feast apply` it."""
    from onerec.features.store import FeaturesError, apply_repo, prepare_repo
    try:
        cfg, repo = _setup(config, preset, overrides, repo)
        ds = load_events_dataset(cfg, data_dir)
        n = cfg.features.backfill_events if events is None else events
        history = None
        if cfg.data.dataset == "kuairand" and cfg.features.seed_history:
            from onerec.data.kuairand import read_history
            history = read_history(data_dir or cfg.data.data_dir)
        cb = None
        if codebook is not None:
            from onerec.tokenizer.codebook import Codebook
            cb = Codebook.load(codebook)
        t0 = time.perf_counter()
        part = Dataset(ds.name, ds.events.iloc[:n], ds.items, ds.users)
        prepare_repo(repo, cfg, part, history=history, codebook=cb)
        apply_repo(repo)
    except (ConfigError, DataError, FeaturesError) as e:
        raise _fail(e) from None
    console.print(f"applied {repo}: {len(part.events)} events backfilled, {len(ds.users)} users, "
                  f"{len(ds.items)} videos in {time.perf_counter() - t0:.1f}s")


@features_app.command("materialize")
def materialize_cmd(config: ConfigOpt = None, preset: PresetOpt = None,
                    overrides: SetOpt = None, repo: Path | None = RepoOpt) -> None:
    """Load the newest offline row of every user and video into the online store."""
    from onerec.features.store import FeaturesError, materialize_all, open_store
    try:
        _, repo = _setup(config, preset, overrides, repo)
        t0 = time.perf_counter()
        materialize_all(open_store(repo))
    except (ConfigError, FeaturesError) as e:
        raise _fail(e) from None
    console.print(f"materialized {repo} in {time.perf_counter() - t0:.1f}s")


@features_app.command("push")
def push_cmd(config: ConfigOpt = None, preset: PresetOpt = None,
             overrides: SetOpt = None, repo: Path | None = RepoOpt,
             data_dir: Path | None = typer.Option(None, "--data-dir", help="dataset folder"),
             start: int = typer.Option(0, "--start", help="first event (log position)"),
             count: int = typer.Option(10_000, "--count", help="events to stream"),
             ) -> None:
    """Stream events [start, start + count) of the log through the writer (replays are no-ops)."""
    from onerec.features.store import FeaturesError, StreamWriter, open_store
    try:
        cfg, repo = _setup(config, preset, overrides, repo)
        ev = load_events_dataset(cfg, data_dir).events.iloc[start:start + count]
        t0 = time.perf_counter()
        stats = StreamWriter(open_store(repo), cfg).consume_all(ev)
    except (ConfigError, DataError, FeaturesError) as e:
        raise _fail(e) from None
    dt = time.perf_counter() - t0
    console.print(f"{stats.applied} events applied, {stats.skipped} skipped (replayed or late), "
                  f"{len(ev) / max(dt, 1e-9):,.0f} events/s")


@features_app.command("get")
def get_cmd(user: list[int] = typer.Option(..., "--user", help="user id (repeatable)"),
            config: ConfigOpt = None, preset: PresetOpt = None,
            overrides: SetOpt = None, repo: Path | None = RepoOpt) -> None:
    """Print users' online contexts (short / pos / long video ids), as serving reads them."""
    from onerec.features.store import FeaturesError, online_user_context, open_store
    try:
        _, repo = _setup(config, preset, overrides, repo)
        ctx = online_user_context(open_store(repo), user)
    except (ConfigError, FeaturesError) as e:
        raise _fail(e) from None
    t = Table(title=f"online context ({repo})")
    for col in ("user", "short", "pos", "long"):
        t.add_column(col)
    for u, (short, pos, long) in ctx.items():
        t.add_row(str(u), *(f"{len(s)}: {s[-5:]}" for s in (short, pos, long)))
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add the `features` command group to the main CLI."""
    app.add_typer(features_app, name="features")


app = typer.Typer(add_completion=False)
register(app)

if __name__ == "__main__":
    app()
