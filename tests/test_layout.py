"""The tests mirror the package (torchtune style): `onerec/<m>.py` is tested in `tests/test_<m>.py`
and `onerec/<sub>/<m>.py` in `tests/<sub>/test_<m>.py`, a folder with an `__init__.py`."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "onerec"
TESTS = ROOT / "tests"

# `python -m onerec` only hands over to the CLI (tested in tests/app/test_cli.py)
EXEMPT = {"onerec.__main__"}


def mirrored_test(module: Path) -> Path:
    """onerec/a/b.py -> tests/a/test_b.py."""
    rel = module.relative_to(PACKAGE)
    return TESTS.joinpath(*rel.parts[:-1], f"test_{rel.name}")


def dotted(module: Path) -> str:
    return ".".join(("onerec", *module.relative_to(PACKAGE).with_suffix("").parts))


def untested_modules() -> list[str]:
    """Every module without its mirrored test file, or whose test folder is not a package,
    except the exempt one."""
    missing = []
    for module in sorted(PACKAGE.rglob("*.py")):
        name = dotted(module)
        if module.name == "__init__.py" or name in EXEMPT:
            continue
        test = mirrored_test(module)
        if not test.is_file():
            missing.append(f"{name}: no {test.relative_to(ROOT)}")
        elif not (test.parent / "__init__.py").is_file():
            missing.append(f"{name}: no {(test.parent / '__init__.py').relative_to(ROOT)}")
    return missing


def test_every_module_has_its_mirrored_test_file():
    missing = untested_modules()
    assert not missing, "modules without their mirrored test file:\n" + "\n".join(missing)


def test_the_mirror_is_computed_folder_for_folder():
    assert mirrored_test(PACKAGE / "io.py") == TESTS / "test_io.py"
    assert mirrored_test(PACKAGE / "data" / "schema.py") == TESTS / "data" / "test_schema.py"
    assert dotted(PACKAGE / "tokenizer" / "rq_kmeans.py") == "onerec.tokenizer.rq_kmeans"
