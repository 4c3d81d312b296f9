"""The Config options of every `onerec` command, declared once.

Each command builds one `Config`: ``--config FILE`` or ``--preset NAME`` (a preset when neither
is given: the command's own default), then each ``--set a.b=v`` in order. The `onerec` CLI, its
`align`, `pipeline` and `features` sub-apps all take these three options with these names,
short flags and help texts, and load them with `load_config`, so a flag means the same thing in
every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onerec.config import Config

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Config YAML file.")]
PresetOpt = Annotated[str | None, typer.Option(
    "--preset", "-p", help="Preset: tiny, small or base (without --config: the command's "
                           "default preset).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="Dotted override, e.g. model.d_model=64 (repeatable, applied in order).")]


def load_config(config: Path | None, preset: str | None, overrides: list[str] | None, *,
                default_preset: str | None = None) -> Config:
    """The Config of these options; `default_preset` when neither a file nor a preset is given
    (None: `Config.load`'s own default). Raises `onerec.config.ConfigError` naming the key."""
    if config is None and preset is None:
        preset = default_preset
    return Config.load(config, preset, overrides or [])
