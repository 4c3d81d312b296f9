"""`onerec.reward` (the package's `__init__`): one way in to every module's public names."""

from __future__ import annotations

import importlib
import pkgutil

import onerec.reward as rw


def test_the_package_exports_every_public_name_of_its_modules():
    """`from onerec.reward import X` is the way in: each module's public names are there."""
    modules = sorted(m.name for m in pkgutil.iter_modules(rw.__path__))
    assert {"shaper", "model", "data", "train", "metrics", "io", "selection"} <= set(modules)
    for name in modules:
        mod = importlib.import_module(f"onerec.reward.{name}")
        assert mod.__doc__, name
        own = {k for k, v in vars(mod).items() if not k.startswith("_")
               and getattr(v, "__module__", mod.__name__) == mod.__name__
               and not isinstance(v, type(importlib))}
        assert own <= set(rw.__all__), (name, own - set(rw.__all__))
    assert all(getattr(rw, k) is not None for k in rw.__all__)
