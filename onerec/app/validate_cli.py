"""`onerec validate`: Great Expectations suites on a KuaiRand-layout folder, and their summary.

A self-contained command: `onerec/app/cli.py` calls `register(app)`. `run_validation` (validate,
print the table, write the report) is its own function because the demo's first step runs the
same check (`onerec.app.demo`); it lives here, not in `cli.py`, so the demo needs the command,
not the whole CLI (which imports the demo). The checks themselves are `onerec.validation`.
Errors a user can fix (bad config, missing file) print one red line and exit 2; a failed suite
exits 1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from onerec.app.cli_options import ConfigOpt, PresetOpt, SetOpt, load_config
from onerec.config import Config, ConfigError
from onerec.data.schema import DataError

console = Console()
err_console = Console(stderr=True)

DEFAULT_DATA = Path("data/kuairand-pure")


def _fail(msg: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
    return typer.Exit(2)


def run_validation(data_dir: Path, cfg: Config, reference: Path | None, out: Path | None,
                   quiet: bool = False) -> bool:
    """Validate a folder, print the summary, write the report. Raises typer.Exit on bad input."""
    from onerec import validation

    ref_path = reference if reference is not None else data_dir / "reference.json"
    try:
        ref = validation.load_reference(ref_path) if ref_path.exists() else None
        if reference is not None and ref is None:
            raise DataError(f"missing file: {reference}")
        t0 = time.perf_counter()
        with console.status(f"validating {data_dir} with Great Expectations ..."):
            report = validation.validate_folder(data_dir, cfg, reference=ref)
        elapsed = time.perf_counter() - t0
    except DataError as e:
        raise _fail(str(e)) from None
    if out is not None:
        json_path, md_path = validation.write_report(report, out)
    if not quiet:
        table = Table(title=f"data validation: {data_dir} ({elapsed:.1f} s)")
        for col in ("suite", "result", "expectations", "failed"):
            table.add_column(col)
        for name, s in report.suites.items():
            ok = "[green]pass[/]" if s["success"] else "[red]FAIL[/]"
            table.add_row(name, ok, str(s["evaluated"]), str(s["failed"]))
        console.print(table)
        if ref is None:
            console.print("[yellow]no reference snapshot: drift checks skipped[/]")
        for f in report.failures:
            console.print(f"[red]x[/] {f.message}", highlight=False)
        if out is not None:
            console.print(f"report: {json_path}  summary: {md_path}")
    return report.success


def validate(
    data_dir: Annotated[Path, typer.Argument(help="KuaiRand-layout folder.")] = DEFAULT_DATA,
    reference: Annotated[Path | None, typer.Option(
        help="Reference snapshot JSON for drift checks [default: DATA_DIR/reference.json "
             "when present].")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json and summary.md.")] =
        Path("runs/validation"),
    write_reference: Annotated[Path | None, typer.Option(
        help="Instead of validating, write a reference snapshot of DATA_DIR here.")] = None,
    config: ConfigOpt = None, preset: PresetOpt = None, set_: SetOpt = None,
) -> None:
    """Validate impression logs, item and user features (Great Expectations): schema, nulls,
    ranges, duplicates, time order, freshness, unknown ids, drift. Exit 1 when a suite fails."""
    try:
        cfg = load_config(config, preset, set_)
    except ConfigError as e:
        raise _fail(f"config: {e}") from None
    if write_reference is not None:
        from onerec import validation

        try:
            ref = validation.reference_from_folder(data_dir, cfg)
        except DataError as e:
            raise _fail(str(e)) from None
        validation.save_reference(ref, write_reference)
        console.print(f"wrote reference snapshot {write_reference}")
        return
    if not run_validation(data_dir, cfg, reference, out):
        raise typer.Exit(1)




def register(app: typer.Typer) -> None:
    """Add the `validate` command to the main CLI."""
    app.command("validate")(validate)
