"""KServe V2 over gRPC (``inference.GRPCInferenceService``): a thin adapter over the
same ``InferenceService`` as V2 REST.

It runs in the server's own event loop on uvicorn's HTTP/2 protocol, on a port of its
own (``grpc_wire`` says why not on ``grpc.aio``): the same models, keys (metadata
``authorization: Bearer <key>`` or ``x-api-key``, resolved by the same cached
resolver), rate limits, budgets, usage records and request metrics
(``protocol="grpc"``). Errors are gRPC status codes; the message starts with our
stable code in brackets (``[model_not_found] model 'x' not found``) and the trailing
metadata carries it as ``maas-code`` (and ``retry-after`` on overload), so a client
can branch on it as a REST client branches on the JSON ``code``.

Health (ServerLive, ServerReady, ServerMetadata) needs no key, as on REST.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from maas import __version__
from maas.api.auth import key_from
from maas.api.grpc_wire import CallContext, GrpcWire, Method, serving_http2
from maas.api.lifetime import requested_timeout
from maas.auth.principal import ANONYMOUS_ADMIN, Principal
from maas.errors import InvalidInput, MaasError, Unauthenticated
from maas.protocols.v2 import requested_max_tokens, server_metadata
from maas.protocols.v2grpc import (
    SERVICE,
    decode_infer_request,
    encode_infer_response,
    message,
)
from maas.registry.refs import parse_selector
from maas.services import Services
from maas.services.inference import TensorCall

__all__ = ["GrpcInference", "serving_grpc", "status_of"]

log = logging.getLogger("maas.api")

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_M = {
    name: message(name)
    for name in (
        "ServerLiveRequest",
        "ServerLiveResponse",
        "ServerReadyRequest",
        "ServerReadyResponse",
        "ModelReadyRequest",
        "ModelReadyResponse",
        "ServerMetadataRequest",
        "ServerMetadataResponse",
        "ModelMetadataRequest",
        "ModelMetadataResponse",
        "ModelInferRequest",
        "ModelInferResponse",
        "ModelStreamInferResponse",
    )
}


def status_of(status: int) -> grpc.StatusCode:
    """The gRPC status code of an HTTP status (``MaasError.status``)."""
    if status in _STATUS:
        return _STATUS[status]
    return grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT


def _described(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """Status, message and trailing metadata of an error."""
    if not isinstance(exc, MaasError):
        log.error("unhandled error in a gRPC call", exc_info=exc)
        return grpc.StatusCode.INTERNAL, "[internal_error] internal server error", ()
    if exc.status >= 500:
        log.error("%s: %s (gRPC)", exc.code, exc.message)
    trailing: tuple[tuple[str, str], ...] = (("maas-code", exc.code),)
    if exc.retry_after is not None:
        trailing += (("retry-after", str(max(1, math.ceil(exc.retry_after)))),)
    return status_of(int(exc.status)), f"[{exc.code}] {exc.message}", trailing


class GrpcInference:
    """The service's handlers, over ``services``."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._inference = services.inference
        self._auth = services.settings.auth.enabled

    def methods(self) -> dict[str, Method]:
        """The service's methods by their HTTP/2 path."""
        unary = {
            "ServerLive": (self.server_live, "ServerLiveRequest"),
            "ServerReady": (self.server_ready, "ServerReadyRequest"),
            "ModelReady": (self.model_ready, "ModelReadyRequest"),
            "ServerMetadata": (self.server_metadata, "ServerMetadataRequest"),
            "ModelMetadata": (self.model_metadata, "ModelMetadataRequest"),
            "ModelInfer": (self.model_infer, "ModelInferRequest"),
        }
        methods = {
            f"/{SERVICE}/{name}": Method(fn, _M[request]) for name, (fn, request) in unary.items()
        }
        methods[f"/{SERVICE}/ModelStreamInfer"] = Method(
            self.model_stream_infer, _M["ModelInferRequest"], streaming=True
        )
        return methods

    async def _principal(self, context: CallContext) -> Principal:
        if not self._auth:
            return ANONYMOUS_ADMIN
        key = key_from(context.invocation_metadata())
        principal = await self._services.principals.resolve(key) if key else None
        if principal is not None:
            return principal
        if key is None:
            raise Unauthenticated(
                "an API key is required: send metadata 'authorization: Bearer <key>' or 'x-api-key'"
            )
        self._services.audit.record_auth_failure(context.client_host, "invalid key")
        raise Unauthenticated("the API key is not valid (unknown, expired or revoked)")

    # -- health and metadata -----------------------------------------------------------

    async def server_live(self, request: Any, context: CallContext) -> Any:
        return _M["ServerLiveResponse"](live=True)

    async def server_ready(self, request: Any, context: CallContext) -> Any:
        return _M["ServerReadyResponse"](ready=self._inference.server_ready())

    async def server_metadata(self, request: Any, context: CallContext) -> Any:
        body = server_metadata("maas", __version__, [])
        return _M["ServerMetadataResponse"](**body)

    async def model_ready(self, request: Any, context: CallContext) -> Any:
        principal = await self._principal(context)
        _, ready = await self._inference.model_ready(
            principal, request.name, _selector(request.version)
        )
        return _M["ModelReadyResponse"](ready=ready)

    async def model_metadata(self, request: Any, context: CallContext) -> Any:
        principal = await self._principal(context)
        body = await self._inference.metadata(principal, request.name, _selector(request.version))
        return _M["ModelMetadataResponse"](**body)

    # -- inference -----------------------------------------------------------------------

    async def model_infer(self, request: Any, context: CallContext) -> Any:
        principal = await self._principal(context)
        return await self._infer(principal, request, context)

    async def _infer(self, principal: Principal, request: Any, context: CallContext) -> Any:
        decoded_id: list[str] = []

        async def decode() -> TensorCall:
            infer = decode_infer_request(request, self._services.decode_limits)
            decoded_id.append(infer.id)
            timeout_s = requested_timeout(infer.parameters, {})
            if timeout_s is None:
                timeout_s = context.time_remaining()
            max_tokens = requested_max_tokens(infer.parameters)
            return TensorCall(infer.inputs, infer.outputs, timeout_s, max_tokens)

        if not request.model_name:
            raise InvalidInput("model_name is required")
        result = await self._inference.predict(
            principal,
            request.model_name,
            _selector(request.model_version),
            decode,
            protocol="grpc",
            endpoint="grpc.infer",
        )
        if result.headers:
            context.set_trailing_metadata(tuple((k.lower(), v) for k, v in result.headers.items()))
        return encode_infer_response(
            request.model_name, str(result.version.version), decoded_id[0], result.outputs
        )

    async def model_stream_infer(
        self, requests: AsyncIterator[Any], context: CallContext
    ) -> AsyncIterator[Any]:
        """Triton's streaming call: one response per request, in order; a failed request
        answers its error in ``error_message`` and the stream goes on. A call without
        a valid key ends as a unary one does (the wire describes the error)."""
        principal = await self._principal(context)
        async for request in requests:
            try:
                response = await self._infer(principal, request, context)
            except Exception as exc:
                _, text, _ = _described(exc)
                yield _M["ModelStreamInferResponse"](error_message=text)
            else:
                yield _M["ModelStreamInferResponse"](infer_response=response)


def _selector(version: str) -> int | str | None:
    return parse_selector(version) if version else None


@asynccontextmanager
async def serving_grpc(services: Services, host: str, port: int) -> AsyncIterator[int]:
    """Serve the V2 gRPC service on ``host:port`` (0: any free) while the block runs;
    yields the bound port. The listener closes first at exit; calls in flight get
    ``serving.drain_grace_s`` to finish."""
    settings = services.settings
    app = GrpcWire(
        GrpcInference(services).methods(),
        max_message_bytes=settings.limits.max_body_bytes,
        described=_described,
    )
    tls = settings.server
    served = serving_http2(
        app,
        host,
        port,
        grace_s=settings.serving.drain_grace_s,
        ssl_certfile=None if tls.ssl_certfile is None else str(tls.ssl_certfile),
        ssl_keyfile=None if tls.ssl_keyfile is None else str(tls.ssl_keyfile),
    )
    async with served as bound:
        yield bound
