"""Checks in front of kserve's request decoders, which trust the request.

kserve 0.21's `InferRequest.from_bytes` (the v2 binary tensor extension: a JSON header of
`Inference-Header-Content-Length` bytes, then raw tensors) indexes the header as if it were
well formed: a header that is a list, an input without `name`, a `binary_data_size` that is a
string, larger than the bytes sent or not the size of the declared shape surfaces as a
KeyError, TypeError or numpy ValueError: HTTP 500. `check_binary_header` names the field
instead (HTTP 400), and `GuardedDataPlane` runs it before kserve's decoder and turns whatever
that decoder still raises on client bytes into InvalidInput. (JSON bodies are validated by
FastAPI's pydantic model first.)

gRPC: bytes that do not parse as the method's protobuf message come back from grpc as UNKNOWN
("Unexpected DecodeError"), and kserve's `from_grpc` refuses an unknown datatype with "invalid
content type", naming no input. `decoding_interceptor`, run outermost on kserve's gRPC server,
answers both with INVALID_ARGUMENT naming the message type or the input.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import orjson
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest

from serving.schema import clip

# bytes per element of the fixed-size v2 datatypes (BYTES is variable-length)
ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1,
              "INT16": 2, "INT32": 4, "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8}


def _dims(where: str, shape: Any) -> list[int]:
    if not isinstance(shape, list):
        raise InvalidInput(f"{where}.shape: must be a list of integers, got {clip(shape)}")
    try:
        dims = [operator.index(d) for d in shape if not isinstance(d, bool)]
    except TypeError:
        dims = []
    if len(dims) != len(shape) or any(d < 0 for d in dims):
        raise InvalidInput(f"{where}.shape: must be a list of integers >= 0, got "
                           f"{clip(shape)}")
    return dims


def check_binary_header(header: Any, binary_bytes: int) -> None:
    """The fields of a binary request's JSON header that kserve's decoder indexes, or
    InvalidInput naming the field; `binary_bytes` is the length of the raw tensors after it."""
    if not isinstance(header, dict):
        raise InvalidInput("request header: must be a JSON object with 'inputs'")
    inputs = header.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInput(f"request header: 'inputs' must be a list, got {clip(inputs)}")
    used = 0
    for i, inp in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(inp, dict):
            raise InvalidInput(f"{where}: must be an object, got {clip(inp)}")
        for key in ("name", "datatype"):
            if not isinstance(inp.get(key), str):
                raise InvalidInput(f"{where}.{key}: must be a string, got "
                                   f"{clip(inp.get(key))}")
        dims = _dims(where, inp.get("shape"))
        params = inp.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidInput(f"{where}.parameters: must be an object, got {clip(params)}")
        if inp.get("data") is not None or not params or "binary_data_size" not in params:
            continue  # JSON data, or kserve's own "'data' field is missing" refusal
        size = params["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{where}.parameters.binary_data_size: must be an integer "
                               f">= 0, got {clip(repr(size))}")
        item = ITEM_BYTES.get(inp["datatype"])
        if item is None:
            raise InvalidInput(f"{where}.datatype: {clip(inp['datatype'])} is not a "
                               f"fixed-size v2 datatype ({', '.join(ITEM_BYTES)}) for binary "
                               f"data")
        if size != math.prod(dims) * item:
            raise InvalidInput(f"{where}.parameters.binary_data_size: {size} bytes do not "
                               f"fill shape {dims} of {inp['datatype']} "
                               f"({math.prod(dims) * item} bytes)")
        used += size
        if used > binary_bytes:
            raise InvalidInput(f"{where}.parameters.binary_data_size: the inputs' binary data "
                               f"({used} bytes so far) exceeds the {binary_bytes} bytes after "
                               f"the JSON header")
    outputs = header.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidInput(f"request header: 'outputs' must be a list, got {clip(outputs)}")
        for i, out in enumerate(outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InvalidInput(f"outputs[{i}]: must be an object with a string 'name', "
                                   f"got {clip(out)}")
            if not isinstance(out.get("parameters") or {}, dict):
                raise InvalidInput(f"outputs[{i}].parameters: must be an object")
    for key in ("parameters",):
        if header.get(key) is not None and not isinstance(header[key], dict):
            raise InvalidInput(f"request header: '{key}' must be an object, got "
                               f"{clip(header[key])}")
    if header.get("id") is not None and not isinstance(header["id"], str):
        raise InvalidInput(f"request header: 'id' must be a string, got {clip(header['id'])}")


class GuardedDataPlane(DataPlane):
    """kserve's DataPlane whose binary REST decoding checks the header first."""

    def decode_inference_request(self, body: Any, headers: dict, model_name: str
                                 ) -> InferRequest:
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        raw = headers.get("inference-header-content-length")
        if raw is None or not raw.strip().isdigit() or int(raw) > len(body):
            # serving.limits refuses these before the body is read; kept for direct callers
            return super().decode_inference_request(body, headers, model_name)
        n = int(raw)
        try:
            header = orjson.loads(body[:n])
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"request header: not JSON ({e})") from None
        check_binary_header(header, len(body) - n)
        try:
            return super().decode_inference_request(body, headers, model_name)
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise InvalidInput(f"binary request: malformed header or data "
                               f"({type(e).__name__}: {clip(str(e), 200)})") from None


def install(server: Any) -> None:
    """Swap the ModelServer's DataPlane for a GuardedDataPlane and guard its gRPC decoding
    (before `start`)."""
    server.dataplane = GuardedDataPlane(model_registry=server.registered_models)
    install_grpc()


# -- gRPC ----------------------------------------------------------------------------------------
V2_DATATYPES = (*ITEM_BYTES, "BYTES")


class _Undecodable:
    """What the lenient deserializer hands on for bytes that are not the method's message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def check_grpc_request(request: Any) -> None:
    """What kserve's `InferRequest.from_grpc` would refuse with a message naming no field."""
    for i, inp in enumerate(getattr(request, "inputs", ())):
        if inp.datatype not in V2_DATATYPES:
            raise InvalidInput(f"input {clip(inp.name) or f'#{i}'}: datatype "
                               f"{clip(inp.datatype)!s} is not a v2 datatype "
                               f"({', '.join(V2_DATATYPES)})")


def decoding_interceptor() -> Any:
    """A grpc.aio server interceptor: a message that does not parse as the method's request
    type is INVALID_ARGUMENT naming the type (grpc alone answers UNKNOWN), and a ModelInfer
    request whose datatype is not a v2 one is INVALID_ARGUMENT naming the input."""
    import inspect

    import grpc

    class Decoding(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            if (handler is None or handler.unary_unary is None
                    or handler.request_deserializer is None):
                return handler
            decode, inner = handler.request_deserializer, handler.unary_unary
            method = details.method.rsplit("/", 1)[-1]

            def lenient(raw: bytes) -> Any:
                try:
                    return decode(raw)
                except Exception as e:  # protobuf's DecodeError, or anything a parser raises
                    return _Undecodable(f"{type(e).__name__}: {clip(str(e), 200)}")

            async def behavior(request: Any, context: Any) -> Any:
                if isinstance(request, _Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"{method}: the message is not a valid request "
                                        f"protobuf ({request.reason})")
                if method == "ModelInfer":
                    try:
                        check_grpc_request(request)
                    except InvalidInput as e:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                result = inner(request, context)
                return await result if inspect.isawaitable(result) else result

            return grpc.unary_unary_rpc_method_handler(
                behavior, request_deserializer=lenient,
                response_serializer=handler.response_serializer)

    return Decoding()


class _GuardedAio:
    """`grpc.aio` whose servers run `decoding_interceptor` outermost."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def server(self, *args: Any, interceptors: Any = (), **kwargs: Any) -> Any:
        return self.real.server(*args, interceptors=(decoding_interceptor(), *interceptors),
                                **kwargs)


def install_grpc() -> None:
    """Make the next gRPC server kserve starts in this process use `decoding_interceptor`."""
    from kserve.protocol.grpc import server as grpc_server

    if not isinstance(grpc_server.aio, _GuardedAio):
        grpc_server.aio = _GuardedAio(grpc_server.aio)
