"""One way to print a benchmark table: a rich table for people, then the same rows as Markdown
for docs/results.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table


def print_table(console: Console, title: str, columns: Sequence[str],
                rows: Sequence[Sequence[str]], left: Sequence[str] = ()) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c in left else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def csv_of(kind: type) -> Callable[[str], list]:
    """An argparse type: "1,2, 4" -> [kind(1), kind(2), kind(4)]."""
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]
