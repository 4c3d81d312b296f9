"""The loopback Redis of the Redis suites: a real redis-server, started, pinged, stopped; and the
fixture's rule for a missing binary (skip on a laptop, fail in CI)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from onerec.features.redis_server import (
    LocalRedis,
    RedisServerError,
    find_redis_server,
    free_port,
    ping,
)
from tests.conftest import redis_server_binary


def command(host: str, port: int, *words: str) -> bytes:
    """One inline command, its raw reply (enough for INFO / CONFIG GET / SET / GET)."""
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(" ".join(words).encode() + b"\r\n")
        s.settimeout(2)
        return s.recv(65536)


def test_local_redis_serves_on_loopback_without_persistence_and_is_gone_after_stop():
    server = LocalRedis(redis_server_binary()).start()
    try:
        host, port = server.host, server.port
        folder, pid = server.dir, server.proc.pid
        assert host == "127.0.0.1" and ping(host, port)
        assert server.connection_string(3) == f"127.0.0.1:{port},db=3"
        assert b"+OK" in command(host, port, "SET", "k", "v")
        assert b"v" in command(host, port, "GET", "k")
        assert command(host, port, "CONFIG", "GET", "appendonly").endswith(b"no\r\n")
        assert command(host, port, "CONFIG", "GET", "save").endswith(b"$0\r\n\r\n")  # save ''
        assert folder is not None and folder.is_dir()
        second = LocalRedis(redis_server_binary()).start()  # one per xdist worker, say
        assert second.port != port and ping(second.host, second.port)
        second.stop()
        assert ping(host, port)  # stopping one leaves the other running
    finally:
        server.stop()
    assert not ping(host, port)
    assert not folder.exists()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    server.stop()  # twice is harmless (the fixture's teardown after a failed test, atexit)
    with pytest.raises(RedisServerError, match="not started"):
        server.connection_string()


def test_a_server_that_does_not_come_up_is_an_error_not_a_hang(tmp_path):
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR' >&2\nexit 1\n")
    fake.chmod(0o755)
    server = LocalRedis(str(fake), start_timeout_s=5)
    with pytest.raises(RedisServerError, match="FATAL CONFIG FILE ERROR"):
        server.start()
    assert server.proc is None and server.dir is None  # nothing left behind
    assert not ping("127.0.0.1", free_port())


def test_find_redis_server_searches_the_path_it_is_given(tmp_path):
    assert find_redis_server(path=str(tmp_path)) is None
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_redis_server(path=str(tmp_path)) == str(fake)


def test_missing_redis_server_skips_on_a_laptop_but_fails_in_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="redis-server is not installed"):
        redis_server_binary(install=False, path=str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        redis_server_binary(install=False, path=str(tmp_path))
