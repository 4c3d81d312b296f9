"""`onerec rollout init|publish|ramp|promote|rollback|sync|status|simulate`: GitOps canary rollout.

A self-contained sub-app: `onerec/app/cli.py` calls `register(app)`. Every step is one commit in the
GitOps repository (`--repo`, default: the current folder), made by `onerec.gitops`; Argo CD
applies it. `simulate` runs the local A/B loop: simulated KuaiRand users split by the canary's
percentage, the analysis, and (with `--apply`) the promote or rollback commit it decides.
Refusals (dirty tree, unknown environment, missing patch file, no canary) print one red line
and exit 2.

The continuous-training state (`onerec.registry`: ROOT/production, ROOT/canary) follows each
promote and rollback (`registry.follow_rollout`), so the next cycle warm-starts from the model
that is stable in the tree. `--root` names it; by default it is the GitOps repository's parent
when the repository is ROOT/gitops (where `publish` creates it) and that folder holds a state;
a GitOps repository of its own has no state to move. `sync` applies the same rule after a
rollout made outside this command (a revert, another tool).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from onerec import gitops, registry

console = Console()
err_console = Console(stderr=True)
rollout_app = typer.Typer(help="GitOps canary rollout: publish, ramp, promote, roll back.",
                          no_args_is_help=True)

RepoOpt = Annotated[Path, typer.Option("--repo", help="GitOps repository (holds k8s/overlays).")]
EnvArg = Annotated[str, typer.Argument(help="Environment: a folder of k8s/overlays (dev, prod).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; goes into the commit.")]
RootOpt = Annotated[Path | None, typer.Option(
    "--root", help="Continuous-training state (ROOT/production, ROOT/canary) that follows the "
    "rollout [default: the repository's parent when it is ROOT/gitops].")]


T = TypeVar("T")


def _run(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return step(*args, **kwargs)
    except gitops.GitOpsError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None


def _done(repo: Path, env: str, sha: str) -> None:
    state = gitops.read_state(repo, env)
    console.print(f"[green]{sha[:10]}[/] {state.describe()}  (push to let Argo CD sync it)")


def state_root(repo: Path, root: Path | None) -> Path | None:
    """The state folder a rollout in `repo` moves: `root`, else the parent of a repository
    named ROOT/gitops when that parent holds a production model or a candidate, else None."""
    if root is not None:
        if not (root / registry.PRODUCTION).is_dir() and not (root / registry.CANARY).is_dir():
            err_console.print(f"[bold red]error:[/] --root {root}: no {registry.PRODUCTION}/ or "
                              f"{registry.CANARY}/ here; is this the pipeline's state folder?")
            raise typer.Exit(2)
        return root
    repo = repo.resolve()
    parent = repo.parent
    if repo.name == registry.GITOPS and ((parent / registry.PRODUCTION).is_dir()
                                          or (parent / registry.CANARY).is_dir()):
        return parent
    return None


def follow(repo: Path, env: str, root: Path | None) -> str | None:
    """Move the state under `root` to agree with `env`'s rollout; print what happened."""
    if root is None:
        return None
    state = gitops.read_state(repo, env)
    cand = registry.read_canary(root)
    moved = registry.follow_rollout(root, state.stable.version,
                                    state.canary.version if state.canary else None)
    prod = registry.read_production(root)
    where = (f"production {prod.version} (watermark {prod.watermark_ms})" if prod
             else "no production model")
    if moved == "promoted":
        console.print(f"state {root}: candidate {state.stable.version} is production now (the "
                      "next cycle warm-starts from it; the old one is in previous/)",
                      highlight=False)
    elif moved == "discarded" and cand is not None:
        console.print(f"state {root}: candidate {cand.version} discarded; the next cycle "
                      f"warm-starts from {where}", highlight=False)
    elif prod is None or prod.version != state.stable.version:
        console.print(f"state {root}: {where}; no candidate for {state.stable.version} "
                      "(published outside the pipeline?)", highlight=False)
    return moved


@rollout_app.command("init")
def init_cmd(path: Annotated[Path, typer.Argument(help="New folder for the repository.")]) -> None:
    """Create a local GitOps repository from this checkout's k8s/ (for the demo)."""
    repo = _run(gitops.init_repo, path)
    console.print(f"GitOps repository at {repo} (k8s/overlays: "
                  f"{', '.join(sorted(p.name for p in (repo / gitops.OVERLAYS).iterdir()))})")


@rollout_app.command("publish")
def publish_cmd(env: EnvArg, version: Annotated[str, typer.Argument(help="Version label.")],
                storage_uri: Annotated[str, typer.Argument(help="Model repository URI.")],
                canary_percent: Annotated[int, typer.Option(
                    "--canary-percent", help="Share of traffic for the canary (0-99).")] = 10,
                repo: RepoOpt = Path("."), reason: ReasonOpt = None) -> None:
    """Start a canary: VERSION at --canary-percent % beside the stable version."""
    _done(repo, env, _run(gitops.publish, repo, env, version, storage_uri, canary_percent,
                          reason))


@rollout_app.command("ramp")
def ramp_cmd(env: EnvArg, canary_percent: Annotated[int, typer.Argument(help="New share, 0-99.")],
             repo: RepoOpt = Path("."), reason: ReasonOpt = None) -> None:
    """Change the running canary's share of traffic."""
    _done(repo, env, _run(gitops.ramp, repo, env, canary_percent, reason))


@rollout_app.command("promote")
def promote_cmd(env: EnvArg, repo: RepoOpt = Path("."), reason: ReasonOpt = None,
                root: RootOpt = None) -> None:
    """The canary becomes the stable version; no canary afterwards. The state's candidate
    becomes production (what the next cycle warm-starts from)."""
    state = state_root(repo, root)
    _done(repo, env, _run(gitops.promote, repo, env, reason))
    follow(repo, env, state)


@rollout_app.command("rollback")
def rollback_cmd(env: EnvArg, repo: RepoOpt = Path("."), reason: ReasonOpt = None,
                 root: RootOpt = None) -> None:
    """Drop the canary; all traffic back on the stable version. The state's candidate is
    discarded: the next cycle warm-starts from production, after its watermark."""
    state = state_root(repo, root)
    _done(repo, env, _run(gitops.rollback, repo, env, reason))
    follow(repo, env, state)


@rollout_app.command("sync")
def sync_cmd(env: EnvArg, repo: RepoOpt = Path("."), root: RootOpt = None) -> None:
    """Make the state follow the tree after a rollout made elsewhere (a revert, another tool):
    promote the candidate if it is stable there, discard it if it is gone."""
    state = state_root(repo, root)
    if state is None:
        err_console.print(f"[bold red]error:[/] {repo}: no state folder found; pass --root")
        raise typer.Exit(2)
    _run(gitops.read_state, repo, env)
    if follow(repo, env, state) is None:
        cand = registry.read_canary(state)
        console.print(f"state {state}: in step with {env} "
                      f"({'candidate ' + cand.version if cand else 'no candidate'})",
                      highlight=False)


@rollout_app.command("status")
def status_cmd(env: Annotated[str | None, typer.Argument(help="One environment (default: all).")]
               = None, repo: RepoOpt = Path("."), root: RootOpt = None) -> None:
    """Stable version, canary and its share per environment, the last rollout commits, and the
    state's production model and candidate."""
    overlays = repo / gitops.OVERLAYS
    envs = [env] if env else sorted(p.name for p in overlays.iterdir()
                                    if (p / gitops.STABLE_FILE).is_file()) if overlays.is_dir() else []
    if not envs:
        err_console.print(f"[bold red]error:[/] {repo}: no {gitops.OVERLAYS}/ with rollout patches")
        raise typer.Exit(2)
    table = Table("env", "stable", "stable storageUri", "canary", "canary %", "canary storageUri")
    for e in envs:
        s = _run(gitops.read_state, repo, e)
        table.add_row(e, s.stable.version, s.stable.storage_uri,
                      s.canary.version if s.canary else "-", str(s.canary_percent),
                      s.canary.storage_uri if s.canary else "-")
    console.print(table)
    if env:
        for line in _run(gitops.log, repo, env, 5):
            console.print(f"  {line}", highlight=False)
    state = state_root(repo, root)
    if state is not None:
        prod, cand = registry.read_production(state), registry.read_canary(state)
        console.print(f"state {state}: production {prod.version if prod else '-'}, candidate "
                      f"{cand.version if cand else '-'}", highlight=False)


@rollout_app.command("simulate")
def simulate_cmd(env: EnvArg, repo: RepoOpt = Path("."),
                 requests: Annotated[int, typer.Option(help="Simulated requests.")] = 50_000,
                 effect: Annotated[float, typer.Option(
                     help="True relative effect of the canary on engagement (simulation).")] = 0.03,
                 mde: Annotated[float, typer.Option(help="Minimum relative effect to detect.")]
                 = 0.02,
                 data_dir: Annotated[Path, typer.Option(help="KuaiRand folder for the users.")]
                 = Path("data/kuairand-pure"),
                 seed: int = 0,
                 apply: Annotated[bool, typer.Option(
                     "--apply", help="Commit the decided promote or rollback.")] = False,
                 root: RootOpt = None) -> None:
    """A/B on simulated KuaiRand users at the canary's percentage; decide; optionally commit."""
    from onerec import ab

    state = _run(gitops.read_state, repo, env)
    if state.canary is None:
        err_console.print(f"[bold red]error:[/] {state.describe()}: no canary to analyse")
        raise typer.Exit(2)
    if not data_dir.is_dir():
        err_console.print(f"[bold red]error:[/] {data_dir}: no KuaiRand folder (--data-dir)")
        raise typer.Exit(2)
    result, n_users = ab.simulate_canary(str(data_dir), state.canary_percent,
                                         state.canary.version, requests, canary_effect=effect,
                                         mde=mde, seed=seed)
    console.print(f"{state.describe()}; {requests} simulated requests "
                  f"({n_users} KuaiRand users)")
    console.print(result.summary(), highlight=False)
    if apply and result.decision != "wait":
        state = state_root(repo, root)
        step = gitops.promote if result.decision == "promote" else gitops.rollback
        _done(repo, env, _run(step, repo, env, f"A/B: {result.summary()}"))
        follow(repo, env, state)


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")


if __name__ == "__main__":
    rollout_app()
