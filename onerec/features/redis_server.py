"""A throwaway Redis on loopback (Debian's `redis-server`), for tests and benchmarks.

Production's online store is Redis (k8s/base/feast/redis.yaml), the laptop's SQLite. To run the
same feature repo on Redis without a cluster, `LocalRedis` starts `redis-server` on 127.0.0.1 on
a free port with no persistence (`--save '' --appendonly no`, its working folder a temporary
directory), waits until it answers PING, and on `stop` (or the end of a `with` block, or at
interpreter exit if neither ran) terminates it and removes the folder: nothing outlives the run.

`find_redis_server(install=True)` finds the binary and, when it is missing and this process may
(root, apt-get on PATH), installs Debian's package first, as `.ci/run` does before `make test`.
Processes are started from argv lists only, never through a shell.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess  # nosec B404 # argv lists only, no shell
import tempfile
import time
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
APT_TIMEOUT_S = 600


class RedisServerError(RuntimeError):
    """redis-server could not be installed, started or reached."""


def _apt_get(*args: str) -> bool:
    """One apt-get call (non-interactive, waiting for a held dpkg lock); -> it succeeded."""
    apt = shutil.which("apt-get")
    if apt is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run = subprocess.run([apt, "-o", "DPkg::Lock::Timeout=300", *args],  # nosec B603
                             capture_output=True, env=env, timeout=APT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return False
    return run.returncode == 0


def install_redis_server() -> bool:
    """`apt-get install -y redis-server` (after `apt-get update` if the first try fails), only
    as root with apt-get on PATH. -> whether redis-server is on PATH afterwards."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    install = ("install", "-y", "-q", "--no-install-recommends", "redis-server")
    if not _apt_get(*install):
        _apt_get("update", "-q")
        _apt_get(*install)
    return shutil.which("redis-server") is not None


def find_redis_server(install: bool = False, path: str | None = None) -> str | None:
    """The redis-server binary on `path` (default PATH), installing it first when missing and
    `install` is set (see `install_redis_server`); None when there is none."""
    found = shutil.which("redis-server", path=path)
    if found is None and install and install_redis_server():
        found = shutil.which("redis-server", path=path)
    return found


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ping(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server answers PING at host:port (the inline protocol, no client)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class LocalRedis:
    """A redis-server process on loopback, alive between `start()` and `stop()` (or a `with`).

    `connection_string(db)` is Feast's redis online store setting for it ("127.0.0.1:PORT,db=N";
    the 16 numbered databases let several repos of one Feast project share the server).
    """

    def __init__(self, binary: str | None = None, *, host: str = HOST,
                 start_timeout_s: float = 15.0) -> None:
        self.binary = binary
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def connection_string(self, db: int = 0) -> str:
        if self.proc is None:
            raise RedisServerError("LocalRedis is not started")
        return f"{self.host}:{self.port},db={db}"

    def start(self) -> LocalRedis:
        """Start redis-server and wait for PING; retries a port someone took meanwhile."""
        binary = self.binary or find_redis_server()
        if binary is None:
            raise RedisServerError("redis-server not found on PATH (Debian: apt-get install -y "
                                   "redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="onerec-redis-"))
        atexit.register(self.stop)
        for _ in range(3):
            self.port = free_port(self.host)
            log = self.dir / "redis.log"
            argv = [binary, "--bind", self.host, "--port", str(self.port), "--save", "",
                    "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                    "--protected-mode", "yes", "--logfile", ""]
            with log.open("wb") as out:
                self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,  # nosec B603
                                             stdin=subprocess.DEVNULL)
            if self._wait_ready(log):
                return self
            tail = log.read_text(errors="replace")[-1500:]
            self._terminate()
            if "Address already in use" not in tail:
                self.stop()
                raise RedisServerError(f"{binary} did not start on {self.host}:{self.port}:\n"
                                       f"{tail}")
        self.stop()
        raise RedisServerError(f"{binary}: no free port on {self.host} after 3 tries")

    def _wait_ready(self, log: Path) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        assert self.proc is not None  # nosec B101 # type narrowing
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if ping(self.host, self.port, timeout_s=0.5):
                return True
            time.sleep(0.02)
        return False

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s) and remove its folder."""
        self._terminate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
