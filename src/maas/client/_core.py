"""Sans-I/O core of the SDK: what to send for each call and how to read the answer.

``Client`` and ``AsyncClient`` only perform I/O around these ``Call`` values, so every
endpoint is described once (httpx's sync/async twins are what this avoids).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
import orjson
from pydantic import TypeAdapter

from maas.errors import InvalidInput, MaasError, error_class_for
from maas.protocols.jobs import DatasetInfo, JobEvent, JobInfo
from maas.protocols.management import AliasInfo, DeploymentSpec, ModelInfo, VersionInfo
from maas.protocols.v2 import decode_infer_response, encode_infer_request

__all__ = ["Call", "Endpoints", "SseParser", "raise_for_error", "split_ref"]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
UPLOAD_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | Iterable[bytes] | AsyncIterable[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def raise_for_error(response: httpx.Response) -> None:
    """Rebuild the server's error as its ``maas.errors`` class."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    error = body.get("error")
    if isinstance(error, dict):  # the OpenAI shape of the /v1 routes
        body = {**error, "error": error.get("message"), "details": None}
    message = str(body.get("error") or response.reason_phrase or "request failed")
    code = str(body.get("code") or "")
    retry_after = response.headers.get("retry-after")
    cls = error_class_for(code) if code else MaasError
    raised = cls.__new__(cls)
    MaasError.__init__(
        raised,
        message,
        details=body.get("details"),
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
    raised.status_code = response.status_code  # type: ignore[attr-defined]  # for unknown codes
    raise raised


def _parser(adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    def parse(response: httpx.Response) -> T:
        raise_for_error(response)
        return adapter.validate_json(response.content)

    return parse


def _no_content(response: httpx.Response) -> None:
    raise_for_error(response)


def _json(response: httpx.Response) -> Any:
    raise_for_error(response)
    return orjson.loads(response.content)


_MODEL = TypeAdapter(ModelInfo)
_MODELS = TypeAdapter(list[ModelInfo])
_VERSION = TypeAdapter(VersionInfo)
_VERSIONS = TypeAdapter(list[VersionInfo])
_ALIAS = TypeAdapter(AliasInfo)
_ALIASES = TypeAdapter(list[AliasInfo])
_DATASET = TypeAdapter(DatasetInfo)
_DATASETS = TypeAdapter(list[DatasetInfo])
_JOB = TypeAdapter(JobInfo)
_JOBS = TypeAdapter(list[JobInfo])
_EVENTS = TypeAdapter(list[JobEvent])
_EVENT = TypeAdapter(JobEvent)


class SseParser:
    """Server-Sent Events, line by line: feed lines, get ``(event, data)`` when complete.

    A job stream sends ``JobEvent`` objects (``log``, ``progress``, ``state``) and ends
    with ``end`` carrying the final ``JobInfo``.
    """

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, JobEvent | JobInfo] | None:
        line = line.rstrip("\r\n")
        if line.startswith(":"):
            return None
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self._event = value
            elif field == "data":
                self._data.append(value)
            return None
        if not self._data:
            return None
        event, data = self._event, "\n".join(self._data)
        self._event, self._data = "message", []
        if event == "end":
            return event, _JOB.validate_json(data)
        return event, _EVENT.validate_json(data)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``iris`` → (iris, None); ``iris:3`` / ``iris:production`` → (iris, "3" / "production")."""
    name, _, selector = ref.partition(":")
    return name, selector or None


def _v2_path(ref: str, suffix: str = "") -> str:
    name, selector = split_ref(ref)
    base = f"/v2/models/{name}" + (f"/versions/{selector}" if selector else "")
    return base + suffix


def _read_infer(response: httpx.Response) -> dict[str, np.ndarray]:
    raise_for_error(response)
    length = response.headers.get("inference-header-content-length")
    decoded = decode_infer_response(response.content, int(length) if length else None)
    return decoded.outputs


class Endpoints:
    """Every call the SDK can make, as data."""

    @staticmethod
    def list_models() -> Call[list[ModelInfo]]:
        return Call("GET", "/api/v1/models", _parser(_MODELS))

    @staticmethod
    def get_model(name: str) -> Call[ModelInfo]:
        return Call("GET", f"/api/v1/models/{name}", _parser(_MODEL))

    @staticmethod
    def create_model(name: str, description: str = "", task: str | None = None) -> Call[ModelInfo]:
        body = {"name": name, "description": description, "task": task}
        return Call("POST", "/api/v1/models", _parser(_MODEL), json=body)

    @staticmethod
    def delete_model(name: str) -> Call[None]:
        return Call("DELETE", f"/api/v1/models/{name}", _no_content)

    @staticmethod
    def list_versions(name: str) -> Call[list[VersionInfo]]:
        return Call("GET", f"/api/v1/models/{name}/versions", _parser(_VERSIONS))

    @staticmethod
    def get_version(name: str, version: int | str) -> Call[VersionInfo]:
        return Call("GET", f"/api/v1/models/{name}/versions/{version}", _parser(_VERSION))

    @staticmethod
    def delete_version(name: str, version: int) -> Call[None]:
        return Call("DELETE", f"/api/v1/models/{name}/versions/{version}", _no_content)

    @staticmethod
    def push(
        name: str,
        content: Iterable[bytes] | AsyncIterable[bytes],
        *,
        filename: str,
        alias: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Call[VersionInfo]:
        params = {"filename": filename}
        if alias:
            params["alias"] = alias
        if description:
            params["description"] = description
        if metadata:
            params["metadata"] = orjson.dumps(dict(metadata)).decode()
        return Call(
            "POST",
            f"/api/v1/models/{name}/versions",
            _parser(_VERSION),
            params=params,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )

    @staticmethod
    def list_aliases(name: str) -> Call[list[AliasInfo]]:
        return Call("GET", f"/api/v1/models/{name}/aliases", _parser(_ALIASES))

    @staticmethod
    def set_alias(name: str, alias: str, version: int, force: bool = False) -> Call[AliasInfo]:
        path = f"/api/v1/models/{name}/aliases/{alias}"
        params = {"force": "true"} if force else {}
        return Call("PUT", path, _parser(_ALIAS), params=params, json={"version": version})

    @staticmethod
    def set_deployment(name: str, version: int, spec: DeploymentSpec) -> Call[VersionInfo]:
        path = f"/api/v1/models/{name}/versions/{version}/deployment"
        return Call("PUT", path, _parser(_VERSION), json=spec.model_dump(mode="json"))

    @staticmethod
    def deployment_status(name: str, version: int | str) -> Call[dict[str, Any]]:
        return Call("GET", f"/api/v1/models/{name}/versions/{version}/deployment/status", _json)

    @staticmethod
    def delete_alias(name: str, alias: str) -> Call[None]:
        return Call("DELETE", f"/api/v1/models/{name}/aliases/{alias}", _no_content)

    # -- datasets and jobs ------------------------------------------------------------

    @staticmethod
    def push_dataset(
        name: str,
        content: Iterable[bytes] | AsyncIterable[bytes],
        *,
        filename: str,
        fmt: str | None = None,
    ) -> Call[DatasetInfo]:
        params = {"name": name, "filename": filename}
        if fmt:
            params["format"] = fmt
        return Call(
            "POST",
            "/api/v1/datasets",
            _parser(_DATASET),
            params=params,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )

    @staticmethod
    def list_datasets(name: str | None = None) -> Call[list[DatasetInfo]]:
        params = {"name": name} if name else {}
        return Call("GET", "/api/v1/datasets", _parser(_DATASETS), params=params)

    @staticmethod
    def get_dataset(ref: str) -> Call[DatasetInfo]:
        return Call("GET", f"/api/v1/datasets/{ref}", _parser(_DATASET))

    @staticmethod
    def submit_job(spec: Mapping[str, Any] | str) -> Call[JobInfo]:
        """A spec as a mapping (sent as JSON) or as YAML/JSON text (sent as YAML)."""
        if isinstance(spec, str):
            return Call(
                "POST",
                "/api/v1/jobs",
                _parser(_JOB),
                content=spec.encode(),
                headers={"Content-Type": "application/yaml"},
            )
        return Call("POST", "/api/v1/jobs", _parser(_JOB), json=dict(spec))

    @staticmethod
    def list_jobs(
        state: str | None = None, model: str | None = None, limit: int = 100
    ) -> Call[list[JobInfo]]:
        params = {"limit": str(limit)}
        if state:
            params["state"] = state
        if model:
            params["model"] = model
        return Call("GET", "/api/v1/jobs", _parser(_JOBS), params=params)

    @staticmethod
    def get_job(job_id: str) -> Call[JobInfo]:
        return Call("GET", f"/api/v1/jobs/{job_id}", _parser(_JOB))

    @staticmethod
    def cancel_job(job_id: str) -> Call[JobInfo]:
        return Call("POST", f"/api/v1/jobs/{job_id}/cancel", _parser(_JOB))

    @staticmethod
    def job_logs(job_id: str, after: int = 0, type: str | None = None) -> Call[list[JobEvent]]:
        params = {"after": str(after)}
        if type:
            params["type"] = type
        return Call("GET", f"/api/v1/jobs/{job_id}/logs", _parser(_EVENTS), params=params)

    @staticmethod
    def job_events_path(job_id: str) -> str:
        return f"/api/v1/jobs/{job_id}/events"

    @staticmethod
    def model_metadata(ref: str) -> Call[dict[str, Any]]:
        return Call("GET", _v2_path(ref), _json)

    @staticmethod
    def ready() -> Call[bool]:
        return Call("GET", "/v2/health/ready", lambda r: r.status_code == 200)

    @staticmethod
    def infer(
        ref: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        binary: bool = True,
    ) -> Call[dict[str, np.ndarray]]:
        body, headers = encode_infer_request(inputs, outputs=outputs, binary=binary)
        return Call("POST", _v2_path(ref, "/infer"), _read_infer, content=body, headers=headers)

    # audio and rerank (the OpenAI-style routes) --------------------------------------
    @staticmethod
    def transcribe(
        model: str,
        audio: bytes,
        *,
        filename: str = "audio.wav",
        translate: bool = False,
        language: str | None = None,
        prompt: str | None = None,
        response_format: str = "json",
    ) -> Call[Any]:
        """``/v1/audio/transcriptions`` (or ``translations``): JSON formats answer a
        dict, text, srt and vtt a string."""
        fields = {"model": model, "response_format": response_format}
        if language is not None:
            fields["language"] = language
        if prompt is not None:
            fields["prompt"] = prompt
        body, headers = _form(fields, [("file", (filename, audio))])
        path = "/v1/audio/translations" if translate else "/v1/audio/transcriptions"
        return Call("POST", path, _transcript, content=body, headers=headers)

    @staticmethod
    def speak(
        model: str,
        text: str,
        *,
        voice: str = "alloy",
        response_format: str = "wav",
        speed: float = 1.0,
    ) -> Call[bytes]:
        """``/v1/audio/speech``: the encoded audio."""
        body = {
            "model": model,
            "input": text,
            "voice": voice,
            "response_format": response_format,
            "speed": speed,
        }
        return Call("POST", "/v1/audio/speech", _bytes, json=body)

    @staticmethod
    def classify(
        ref: str, images: Sequence[tuple[str, bytes]], *, top_k: int | None = None
    ) -> Call[list[dict[str, Any]]]:
        """``/v2/models/{ref}/classify``: per image (name, encoded bytes), its top labels
        ``{filename, labels: [{label, score}]}``."""
        body, headers = _form({}, [("image", image) for image in images])
        params = {} if top_k is None else {"top_k": str(top_k)}
        path = _v2_path(ref, "/classify")
        return Call("POST", path, _results, params=params, content=body, headers=headers)

    @staticmethod
    def rerank(
        model: str, query: str, documents: Sequence[str], *, top_n: int | None = None
    ) -> Call[list[dict[str, Any]]]:
        """``/v1/rerank``: ``{index, relevance_score, document}`` per document, best
        first."""
        body: dict[str, Any] = {"model": model, "query": query, "documents": list(documents)}
        if top_n is not None:
            body["top_n"] = top_n
        return Call("POST", "/v1/rerank", _results, json=body)


def _form(
    fields: Mapping[str, str], files: list[tuple[str, tuple[str, bytes]]]
) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/form-data`` body and its content type, as httpx encodes a form."""
    form = httpx.Request("POST", "http://form", data=dict(fields), files=files)
    return form.read(), {"Content-Type": form.headers["Content-Type"]}


def _transcript(response: httpx.Response) -> Any:
    raise_for_error(response)
    if response.headers.get("content-type", "").startswith("application/json"):
        return orjson.loads(response.content)
    return response.text


def _results(response: httpx.Response) -> list[dict[str, Any]]:
    return list(_json(response)["results"])


def _bytes(response: httpx.Response) -> bytes:
    raise_for_error(response)
    return response.content


def first_input_name(metadata: Mapping[str, Any]) -> str:
    inputs = metadata.get("inputs") or []
    if len(inputs) != 1:
        raise InvalidInput(
            "this model has several inputs; pass a mapping of input name to array",
            details={"inputs": [i.get("name") for i in inputs]},
        )
    return str(inputs[0]["name"])
