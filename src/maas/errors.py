"""The one exception hierarchy of maas.

Every error a caller can see is a ``MaasError`` subclass that knows its stable
``code`` (public API: clients branch on it), its HTTP ``status`` and, for capacity
errors, a ``retry_after`` in seconds. Only the stdlib is imported, so runtimes,
the registry and the SDK can all raise and catch these without pulling in a web
framework. The API layer renders them in one place (``maas.api.errors``); the SDK
rebuilds the same class from the code (``error_class_for``).

    MaasError
    ├── InvalidRequest (400)
    │   ├── InvalidInput
    │   ├── InvalidName
    │   ├── ShapeMismatch
    │   ├── UnsupportedDatatype
    │   ├── UnsupportedArtifact
    │   ├── ContextLengthExceeded
    │   ├── UnsupportedTask
    │   ├── ClientDisconnected
    │   ├── InvalidSpec
    │   ├── InvalidDeployment
    │   ├── InvalidDataset
    │   ├── AmbiguousId
    │   ├── InvalidAudio
    │   ├── UnsupportedAudioFormat
    │   ├── InvalidImage
    │   └── UnsupportedContent
    ├── Unauthenticated (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── AliasNotFound
    │   ├── KeyNotFound
    │   ├── JobNotFound
    │   └── DatasetNotFound
    ├── Conflict (409)
    │   ├── ModelExists
    │   ├── VersionInUse
    │   ├── RolloutFailed
    │   ├── JobFinished
    │   ├── QualityDropTooLarge
    │   ├── SignatureChanged
    │   └── GcInProgress
    ├── PayloadTooLarge (413)
    │   ├── AudioTooLong
    │   └── ImageTooLarge
    ├── UnsupportedMediaType (415)
    ├── UntrustedArtifact (422)
    ├── RateLimited (429)
    ├── QuotaExceeded (429)
    ├── GenerationQueueFull (429)
    ├── Overloaded (503)
    ├── ModelNotReady (503)
    ├── WorkerCrashed (503)
    ├── PlacementInfeasible (503)
    ├── ShuttingDown (503)
    ├── RequestTimeout (504)
    ├── RuntimeFailure (500)
    ├── ArtifactCorrupted (500)
    ├── StorageFailure (500)
    └── MissingExtra (501)

Startup-only errors (``ConfigInvalid``) derive from
``StartupError``; they stop the process with a readable message and never reach HTTP.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar

__all__ = [
    "AliasNotFound",
    "AmbiguousId",
    "ArtifactCorrupted",
    "AudioTooLong",
    "ClientDisconnected",
    "ConfigInvalid",
    "Conflict",
    "ContextLengthExceeded",
    "DatasetNotFound",
    "Forbidden",
    "GcInProgress",
    "GenerationQueueFull",
    "ImageTooLarge",
    "InvalidAudio",
    "InvalidDataset",
    "InvalidDeployment",
    "InvalidImage",
    "InvalidInput",
    "InvalidName",
    "InvalidRequest",
    "InvalidSpec",
    "JobFinished",
    "JobNotFound",
    "KeyNotFound",
    "MaasError",
    "MissingExtra",
    "ModelExists",
    "ModelNotFound",
    "ModelNotReady",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PlacementInfeasible",
    "QualityDropTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "RolloutFailed",
    "RuntimeFailure",
    "ShapeMismatch",
    "ShuttingDown",
    "SignatureChanged",
    "StartupError",
    "StorageFailure",
    "Unauthenticated",
    "UnsupportedArtifact",
    "UnsupportedAudioFormat",
    "UnsupportedContent",
    "UnsupportedDatatype",
    "UnsupportedMediaType",
    "UnsupportedTask",
    "UntrustedArtifact",
    "VersionInUse",
    "VersionNotFound",
    "WorkerCrashed",
    "error_class_for",
]

_REGISTRY: dict[str, type[MaasError]] = {}


class MaasError(Exception):
    """Base of every error a caller can see.

    ``details`` must be safe to show the caller: no secrets, paths or tracebacks.
    """

    code: ClassVar[str] = "internal_error"
    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    default_message: ClassVar[str] = "internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details or {}
        self.retry_after = retry_after
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if cls.code in _REGISTRY:
                raise TypeError(f"duplicate error code {cls.code!r}")
            _REGISTRY[cls.code] = cls


_REGISTRY[MaasError.code] = MaasError


def error_class_for(code: str) -> type[MaasError]:
    """The class registered for ``code``, or ``MaasError`` for codes this version lacks."""
    return _REGISTRY.get(code, MaasError)


# -- the caller's fault -------------------------------------------------------------


class InvalidRequest(MaasError):
    code = "invalid_request"
    status = HTTPStatus.BAD_REQUEST
    default_message = "invalid request"


class InvalidInput(InvalidRequest):
    code = "invalid_input"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class ShapeMismatch(InvalidRequest):
    code = "shape_mismatch"


class UnsupportedDatatype(InvalidRequest):
    code = "unsupported_datatype"


class UnsupportedArtifact(InvalidRequest):
    code = "unsupported_artifact"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedTask(InvalidRequest):
    """The model exists but does not do what the endpoint asks (chat with an embedder)."""

    code = "unsupported_task"


class ClientDisconnected(InvalidRequest):
    """The caller hung up before its answer; its queued work was dropped.

    Nobody reads this response; it exists so logs and metrics name what happened.
    """

    code = "client_disconnected"
    default_message = "the client disconnected before the answer"


class InvalidSpec(InvalidRequest):
    """A job spec that cannot run: unknown kind or estimator, missing column, bad value."""

    code = "invalid_spec"
    default_message = "invalid job spec"


class InvalidDeployment(InvalidRequest):
    """A deployment spec that cannot serve its version: preferred batch sizes past
    ``max_batch_size``, batching on a model whose inputs have a fixed first dimension,
    or a ``quantize`` its runtime cannot do."""

    code = "invalid_deployment"
    default_message = "invalid deployment spec"


class InvalidDataset(InvalidRequest):
    """An uploaded dataset that is not readable CSV, Parquet or JSONL, or has no rows."""

    code = "invalid_dataset"
    default_message = "the file is not a readable CSV, Parquet or JSONL dataset"


class AmbiguousId(InvalidRequest):
    """An id prefix that starts more than one id: the caller must give more of it."""

    code = "ambiguous_id"


class InvalidAudio(InvalidRequest):
    """An upload that PyAV cannot decode as audio (no audio stream, a damaged or
    unknown container): the caller's file, never the server's fault."""

    code = "invalid_audio"
    default_message = "the file is not audio that can be decoded"


class UnsupportedAudioFormat(InvalidRequest):
    """A speech ``response_format`` this server has no encoder for."""

    code = "unsupported_audio_format"


class InvalidImage(InvalidRequest):
    """Bytes sent as an image that do not decode as JPEG, PNG or WebP."""

    code = "invalid_image"
    default_message = "the image does not decode; send JPEG, PNG or WebP bytes"


class UnsupportedContent(InvalidRequest):
    """A message part the model cannot take (an image in a chat with a text-only model)."""

    code = "unsupported_content"


class Unauthenticated(MaasError):
    code = "unauthenticated"
    status = HTTPStatus.UNAUTHORIZED
    default_message = "a valid API key is required"


class Forbidden(MaasError):
    code = "forbidden"
    status = HTTPStatus.FORBIDDEN
    default_message = "this key may not do that"


class NotFound(MaasError):
    code = "not_found"
    status = HTTPStatus.NOT_FOUND
    default_message = "not found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class DatasetNotFound(NotFound):
    code = "dataset_not_found"


class Conflict(MaasError):
    code = "conflict"
    status = HTTPStatus.CONFLICT
    default_message = "conflict with the current state"


class ModelExists(Conflict):
    code = "model_exists"


class VersionInUse(Conflict):
    code = "version_in_use"


class RolloutFailed(Conflict):
    """The version an alias was to point to could not be loaded; the alias did not move."""

    code = "rollout_failed"
    default_message = "the new version failed to load; the alias was not moved"


class JobFinished(Conflict):
    """The job has already ended (succeeded, failed or cancelled): it cannot be cancelled."""

    code = "job_finished"
    default_message = "the job has already finished"


class QualityDropTooLarge(Conflict):
    """Promotion refused: the version's optimization report shows a quality drop over the
    server's threshold. Pass ``force`` to promote it anyway."""

    code = "quality_drop_too_large"
    default_message = "the version lost more quality than the promotion threshold allows"


class SignatureChanged(Conflict):
    """Promotion refused: the version takes or returns other tensors than the version the
    alias points to now, so the alias's callers would break. Pass ``force`` to promote it
    anyway."""

    code = "signature_changed"
    default_message = "the version's signature differs from the one the alias serves now"


class GcInProgress(Conflict):
    """Another garbage collection pass holds the store (this or another server, or
    ``maas gc --local``); passes take turns rather than race each other."""

    code = "gc_in_progress"
    default_message = "another garbage collection pass is running; try again when it ends"


class PayloadTooLarge(MaasError):
    code = "payload_too_large"
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    default_message = "request body too large"


class AudioTooLong(PayloadTooLarge):
    """Audio longer than ``audio.max_duration_s``: refused while decoding, before the
    model spends time on it."""

    code = "audio_too_long"
    default_message = "the audio is longer than this server transcribes"


class ImageTooLarge(PayloadTooLarge):
    """An image over ``limits.max_image_bytes``, or whose header declares more pixels
    than ``limits.max_image_pixels`` (refused before it is decoded)."""

    code = "image_too_large"
    default_message = "the image is too large"


class UnsupportedMediaType(MaasError):
    code = "unsupported_media_type"
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    default_message = "unsupported content type"


class UntrustedArtifact(MaasError):
    """A pickle or joblib file on a server that does not trust them: loading would run code."""

    code = "untrusted_artifact"
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    default_message = (
        "pickle and joblib files can run arbitrary code when loaded; push .skops, "
        ".onnx or the framework's own format (XGBoost/LightGBM save_model, "
        "torch.export .pt2, .keras), or start the server with --trust-pickle"
    )


# -- capacity -------------------------------------------------------------------------


class RateLimited(MaasError):
    code = "rate_limited"
    status = HTTPStatus.TOO_MANY_REQUESTS
    default_message = "rate limit exceeded"


class QuotaExceeded(MaasError):
    code = "quota_exceeded"
    status = HTTPStatus.TOO_MANY_REQUESTS
    default_message = "quota exhausted for this period"


class GenerationQueueFull(MaasError):
    """A language model's running batch and its queue are both full: retry shortly."""

    code = "generation_queue_full"
    status = HTTPStatus.TOO_MANY_REQUESTS


class Overloaded(MaasError):
    code = "overloaded"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "server overloaded, retry later"


class ModelNotReady(MaasError):
    code = "model_not_ready"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "model is not ready"


class WorkerCrashed(MaasError):
    code = "worker_crashed"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "the worker serving this model stopped; retry"


class PlacementInfeasible(MaasError):
    """The cluster has no room for a model's replicas (a replica asks more than any
    node has, or they were not placed in time): the operator's to fix, by adding nodes
    or asking less, so it fails the load at once instead of waiting forever."""

    code = "placement_infeasible"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "the cluster cannot place this model's replicas"


class ShuttingDown(MaasError):
    code = "shutting_down"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "server is shutting down"


class RequestTimeout(MaasError):
    code = "request_timeout"
    status = HTTPStatus.GATEWAY_TIMEOUT
    default_message = "request timed out"


# -- the server's fault ---------------------------------------------------------------


class RuntimeFailure(MaasError):
    code = "runtime_failure"
    default_message = "the model failed to run"


class ArtifactCorrupted(MaasError):
    code = "artifact_corrupted"
    default_message = "stored artifact does not match its digest"


class StorageFailure(MaasError):
    code = "storage_failure"
    default_message = "artifact storage failed"


class MissingExtra(MaasError):
    """A framework's optional dependency is not installed on this server."""

    code = "missing_extra"
    status = HTTPStatus.NOT_IMPLEMENTED

    def __init__(self, framework: str, extra: str) -> None:
        self.framework = framework
        self.extra = extra
        super().__init__(
            f"the {framework} runtime needs the [{extra}] extra: pip install 'maas[{extra}]'",
            details={"framework": framework, "extra": extra},
        )


# -- startup only ---------------------------------------------------------------------


class StartupError(Exception):
    """Stops the process with a readable message; never reaches HTTP."""


class ConfigInvalid(StartupError):
    pass
