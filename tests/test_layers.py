"""The package layers (docs/architecture.md) hold, and a broken one fails `lint-imports`.

`make test` runs `lint-imports` on the tree; this test runs it too, and then breaks each
contract of pyproject.toml `[tool.importlinter]` once, in a copy of the packages, with the one
import that contract forbids: the contract must then fail and name the offending import. A
contract added without a break here fails `test_every_contract_has_a_break`, so none can be
unenforced by a mistake in its own wording (an expression that matches nothing, say).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10; import-linter depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("onerec", "serving", "pipelines", "components")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# contract id -> (file that gets the import, the import, a link of the chain the report shows)
BREAKS = {
    "core": ("onerec/evaluate.py", "import serving.schema",
             "onerec.evaluate -> serving.schema"),
    "app-on-top": ("onerec/train.py", "from onerec.app import cli",
                   "onerec.train -> onerec.app.cli"),
    "serving": ("serving/schema.py", "import components", "serving.schema -> components"),
    "pipelines": ("pipelines/run.py", "import serving.client", "pipelines.run -> serving.client"),
    "components": ("components/gate.py", "import pipelines.run",
                   "components.gate -> pipelines.run"),
    "launcher": ("components/gate.py", "import kubernetes", "components.gate -> kubernetes"),
    # the demo report importing the CLI closes a loop: cli -> demo -> demo_report -> cli
    "app-acyclic": ("onerec/app/demo_report.py", "from onerec.app import cli",
                    ".demo_report -> .cli"),
}


def contracts() -> dict[str, str]:
    """Contract id -> name, as pyproject.toml declares them."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c["name"] for c in conf["contracts"]}


def lint_imports(root: Path, *contract_ids: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under `root` (found there first, not in site-packages)."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: install the dev extra (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}  # one line per contract
    cmd = [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--config", str(root / "pyproject.toml")]
    for cid in contract_ids:
        cmd += ["--contract", cid]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def status_line(output: str, name: str) -> str:
    """The report's status line for contract `name`: the name, then KEPT or BROKEN (a broken
    contract's name comes again as the heading of its chains)."""
    lines = [line for line in output.splitlines()
             if line.startswith(name) and (" KEPT" in line or " BROKEN" in line)]
    if len(lines) != 1:
        raise AssertionError(f"contract {name!r}: {len(lines)} status lines in\n{output}")
    return lines[0]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the four root packages and pyproject.toml, to break one import at a time."""
    root = tmp_path_factory.mktemp("layers")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layers_hold_on_the_tree():
    res = lint_imports(ROOT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for name in contracts().values():
        assert " KEPT" in status_line(out, name), out
    assert f"Contracts: {len(contracts())} kept, 0 broken." in out


def test_every_contract_has_a_break():
    assert set(BREAKS) == set(contracts())


@pytest.mark.parametrize("contract_id", sorted(BREAKS))
def test_a_broken_import_fails_its_contract(tree, contract_id):
    rel, statement, link = BREAKS[contract_id]
    path = tree / rel
    original = path.read_text()
    name = contracts()[contract_id]
    assert lint_imports(tree, contract_id).returncode == 0  # the copy holds before the break
    path.write_text(f"{original}\n{statement}  # noqa: F401, E402\n")
    try:
        res = lint_imports(tree, contract_id)
    finally:
        path.write_text(original)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "BROKEN" in status_line(out, name), out
    assert link in out, out
