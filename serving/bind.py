"""Bind the KServe ModelServer to one address (`serve.host`), not to every interface.

kserve 0.21 hard-codes its listeners: uvicorn on 0.0.0.0 (`RESTServer`) and gRPC on `[::]`
(`GRPCServer.start`). A server started on a laptop or a shared node should listen on loopback
unless told otherwise, so `onerec serve` binds `serve.host` (127.0.0.1); the manifests pass
`--host 0.0.0.0` explicitly. `bind(host)` must run before `ModelServer.start`: it swaps in a
`RESTServer` whose uvicorn config uses `host`, and a `grpc.aio` whose servers' one
`add_insecure_port` call uses it instead of `[::]`.
"""

from __future__ import annotations

from typing import Any


def grpc_address(host: str, port: int | str) -> str:
    """host:port for gRPC, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class _HostAio:
    """`grpc.aio` whose servers bind `host` wherever kserve asks for an address."""

    def __init__(self, real: Any, host: str) -> None:
        self.real, self.host = real, host

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def server(self, *args: Any, **kwargs: Any) -> Any:
        srv = self.real.server(*args, **kwargs)
        add = srv.add_insecure_port
        srv.add_insecure_port = lambda address: add(
            grpc_address(self.host, address.rsplit(":", 1)[-1]))
        return srv


def bind(host: str) -> None:
    """Make the next ModelServer of this process listen on `host` (REST and gRPC)."""
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"serve.host: expected an address such as 127.0.0.1, got {host!r}")
    from kserve import model_server
    from kserve.protocol.grpc import server as grpc_server
    from kserve.protocol.rest.server import RESTServer

    class HostRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

    real = grpc_server.aio.real if isinstance(grpc_server.aio, _HostAio) else grpc_server.aio
    model_server.RESTServer = HostRESTServer
    grpc_server.aio = _HostAio(real, host)
