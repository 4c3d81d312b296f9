"""Process tuning by re-executing (`onerec.runtime`): once, with the tuned environment, unless it
is already in effect or switched off."""

from __future__ import annotations

import sys

import pytest

from onerec import runtime


@pytest.fixture
def execve(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime.os, "execve", lambda *args: calls.append(args))
    monkeypatch.delenv("ONEREC_NO_TUNING", raising=False)
    for key in runtime.TUNED_ENV:
        monkeypatch.delenv(key, raising=False)
    return calls


def test_reexec_runs_the_same_module_and_arguments_with_the_tuned_env(execve, monkeypatch):
    monkeypatch.setenv("KEEP_ME", "1")
    runtime.reexec_with_tuned_env("onerec", ["train", "--preset", "tiny"])
    (path, argv, env), = execve
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "onerec", "train", "--preset", "tiny"]
    assert {k: env[k] for k in runtime.TUNED_ENV} == runtime.TUNED_ENV
    assert env["KEEP_ME"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_reexec_without_argv_passes_on_the_command_line(execve, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench/serving.py", "--requests", "5"])
    runtime.reexec_with_tuned_env("bench.serving", None)
    assert execve[0][1][-3:] == ["bench.serving", "--requests", "5"]


def test_no_reexec_when_tuned_already_or_switched_off(execve, monkeypatch):
    monkeypatch.setenv("ONEREC_NO_TUNING", "1")
    runtime.reexec_with_tuned_env("onerec", [])
    monkeypatch.delenv("ONEREC_NO_TUNING")
    for key, value in runtime.TUNED_ENV.items():
        monkeypatch.setenv(key, value)
    runtime.reexec_with_tuned_env("onerec", [])
    assert execve == []
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # one setting differs: re-execute
    runtime.reexec_with_tuned_env("onerec", [])
    assert len(execve) == 1
