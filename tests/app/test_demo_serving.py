"""The demo's server lifecycle (`onerec.app.demo_serving`): a free port, this checkout on the
server's PYTHONPATH, and a server that cannot start reported and reaped."""

from __future__ import annotations

import os
import socket

import pytest

from onerec.app.demo_serving import Server, ServingError, free_port, subprocess_env


def test_free_port_can_be_bound_at_once():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_subprocess_env_puts_this_checkout_first_once(monkeypatch):
    import onerec

    repo = os.path.dirname(os.path.dirname(os.path.abspath(onerec.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", repo]))
    paths = subprocess_env()["PYTHONPATH"].split(os.pathsep)
    assert paths == [repo, "/elsewhere"]


def test_server_that_cannot_start_is_reported_and_reaped(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("model:\n  depth: 3\n")  # an unknown key: the server exits 2 at once
    server = Server(repo=tmp_path, config=cfg, log_path=tmp_path / "s.log")
    with pytest.raises(ServingError, match="exited"), server:
        server.wait_ready(timeout_s=120)
    assert server.proc is not None and server.proc.poll() is not None
