"""Fault: a corrupt or partial model version appears while the server is under load.

Issue #15, serving faults. One `onerec serve` (subprocess, folder scan every 0.2 s) serves
version 1; each test publishes one bad version folder (built beside the repository, broken,
then renamed into place, as a faulty exporter or a hand copy would leave it) while two client
threads send requests back to back. The bad version must be refused with its reason in
`GET /onerec/versions`, an explicit reload must answer 503 naming it, and version 1 must go on
answering every request: not one failure during the attempted swap. The last test publishes a
good version (carrying its reward model: RM selection serves it) after all the bad ones: it
swaps in (the scan was not wedged by them) and they stay refused. `test_a_refused_folder_is_retried_once_fixed` is the same rule in-process.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kserve")
pytest.importorskip("tritonclient.http")
requests = pytest.importorskip("requests")

from onerec.config import ServeConfig  # noqa: E402
from tests.serving_util import (  # noqa: E402
    COLD,
    Hammer,
    carry_reward_model,
    standin_server,
    wait_for,
    write_version,
)

VERSIONS = itertools.count(2)  # the bad versions, in test order, each newer than the last


def truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def edit_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    d = json.loads((folder / "manifest.json").read_text())
    change(d)
    (folder / "manifest.json").write_text(json.dumps(d))


# name -> (how to break a fresh version folder, what the refusal reason must say)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated graph": (lambda f: truncate(f / "model.onnx"),
                        "sha256 does not match the manifest"),
    "manifest sha256 of another graph": (
        lambda f: edit_manifest(f, lambda d: d["graphs"]["64"].update(sha256="0" * 64)),
        "sha256 does not match the manifest"),
    "truncated graph, no sha256 recorded": (
        lambda f: (edit_manifest(f, lambda d: d.update(graphs={})),
                   truncate(f / "model.onnx")),
        "ONNX Runtime cannot load it"),
    "missing item table": (lambda f: (f / "items.npy").unlink(),
                           "incomplete version folder, missing items.npy"),
    "truncated item table": (lambda f: truncate(f / "items.npy", keep=40),
                             "unreadable item table"),
    "item table of another catalogue": (
        lambda f: np.save(f / "items.npy", np.arange(1000, 1010, dtype=np.int64)),
        "the manifest's n_items is 60"),
    "torn manifest": (lambda f: truncate(f / "manifest.json"), "unreadable manifest"),
    "malformed manifest field": (
        lambda f: edit_manifest(f, lambda d: d.update(beam_widths=["wide"])),
        "malformed manifest field"),
    "reward model of another codebook": (
        lambda f: carry_reward_model(f, codebook_fp="other"),
        "reward_model/meta.json: reward model made with codebook other"),
}


def publish(model_dir: Path, version: int, breaks: Callable[[Path], None] | None,
            seed: int = 0) -> None:
    """Write a version beside the repository (<repo>/../staging), break it, rename it into
    place (atomic)."""
    staging = model_dir.parent.parent / "staging"
    folder = write_version(staging, version, n_items=60, cold_start=COLD, seed=seed)
    edit_manifest(folder, lambda d: d.update(n_items=60))  # as `onerec export` records it
    if breaks is not None:
        breaks(folder)
    os.replace(folder, model_dir / str(version))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("swap-faults")
    with standin_server(root, "--poll-interval", "0.2") as info:
        info["model_dir"] = root / "repo" / "onerec"
        info["bad"] = {}
        yield info


def status(server) -> dict:
    return requests.get(f"{server['base']}/onerec/versions", timeout=5).json()


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_version_is_refused_and_version_1_answers_every_request(server, case) -> None:
    breaks, reason = CASES[case]
    version = next(VERSIONS)
    with Hammer(server["http"], threads=2) as load:
        load.wait_ok(10)
        publish(server["model_dir"], version, breaks)
        wait_for(lambda: str(version) in status(server)["refused"], 15,
                 f"the refusal of version {version}")
        n = len(load.ok())
        load.wait_ok(n + 10)  # and it goes on serving
    assert not load.failed(), load.failed()[:3]
    assert {o.version for o in load.outcomes} == {1}
    st = status(server)
    assert st["active_version"] == 1 and st["swaps"] == 1
    assert reason in st["refused"][str(version)]["reason"], st["refused"][str(version)]
    load_call = requests.post(f"{server['base']}/v2/repository/models/onerec/load", timeout=30)
    assert load_call.status_code == 503
    assert reason in load_call.json()["error"]
    assert "still serving version 1" in load_call.json()["error"]
    assert requests.get(f"{server['base']}/v2/models/onerec/ready", timeout=5).ok
    server["bad"][version] = reason


def test_a_good_version_after_the_bad_ones_swaps_in_and_they_stay_refused(server) -> None:
    bad = dict(server["bad"])
    assert len(bad) == len(CASES)  # the tests above ran first, in this module
    version = next(VERSIONS)
    with Hammer(server["http"], threads=2) as load:
        load.wait_ok(10)
        publish(server["model_dir"], version, carry_reward_model, seed=5)  # RM selection
        wait_for(lambda: status(server)["active_version"] == version, 15,
                 f"version {version} serving")
        load.wait_ok(10, after=load.outcomes[-1].t1)
    assert not load.failed(), load.failed()[:3]
    served = [o.version for o in load.outcomes]
    assert served[0] == 1 and served[-1] == version and set(served) == {1, version}
    st = status(server)
    assert st["swaps"] == 2
    rm = server["model_dir"] / str(version) / "reward_model"
    # the version's own, with the Config's default cap (serve.rm_selection_code_cap)
    own = f"RM selection ({rm}, whole beam, at most {ServeConfig().rm_selection_code_cap} per " \
        "first-level code)"
    assert st["reranker"] == own
    assert {int(v) for v in st["refused"]} == set(bad)
    for v, reason in bad.items():
        assert reason in st["refused"][str(v)]["reason"]
    text = server["log"].read_text()
    for v in bad:  # refused once, not on every scan
        assert text.count(f"refused model version {v}:") == 1, v
    assert "model version 1 re-ranks with beam order" in text  # exported without one
    assert f"model version {version} re-ranks with {own}" in text


def test_a_refused_folder_is_retried_once_fixed(tmp_path: Path) -> None:
    """In-process: refused versions are retried only when their files change."""
    from serving.repository import VersionRefused
    from serving.versions import VersionManager

    model_dir = tmp_path / "repo" / "onerec"
    write_version(model_dir, 1)
    refusals: list[int] = []
    m = VersionManager(model_dir, on_refuse=lambda v, why: refusals.append(v))
    assert m.refresh().version == 1
    publish(model_dir, 2, lambda f: (f / "items.npy").rename(f.parent / "items-2.npy"))
    assert m.refresh().version == 1 and "missing items.npy" in m.refused[2].reason
    for _ in range(3):
        m.refresh()
    assert refusals == [2]  # unchanged: not retried, not logged again
    with pytest.raises(VersionRefused, match=r"missing items\.npy; still serving version 1"):
        m.reload()
    (tmp_path / "staging" / "items-2.npy").rename(model_dir / "2" / "items.npy")
    assert m.refresh().version == 2 and 2 not in m.refused  # completed: loaded
    publish(model_dir, 3, lambda f: truncate(f / "model.onnx"))
    assert m.refresh().version == 2 and 3 in m.refused
    write_version(tmp_path / "fixed", 3, n_items=60)  # the same graph, rewritten in place
    (model_dir / "3" / "model.onnx").write_bytes(
        (tmp_path / "fixed" / "3" / "model.onnx").read_bytes())
    assert m.refresh().version == 3 and refusals == [2, 3]
