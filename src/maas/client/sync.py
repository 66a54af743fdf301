"""``Client``: the blocking SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from maas.client._core import Call, Endpoints, SseParser, first_input_name, raise_for_error
from maas.client._shared import (
    base_url,
    client_headers,
    file_chunks,
    named_file,
    normalise_inputs,
    resolve_api_key,
    upload_file,
)
from maas.protocols.jobs import DatasetInfo, JobEvent, JobInfo
from maas.protocols.management import AliasInfo, DeploymentSpec, ModelInfo, VersionInfo

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Talk to a maas server: registry management and inference with numpy arrays.

    Without arguments it finds the server and key as the CLI does: ``$MAAS_URL``
    (default ``http://127.0.0.1:8000``), ``$MAAS_API_KEY``, else the admin key a server
    on this machine wrote to ``$MAAS_HOME/admin.key``.

    >>> with Client("http://127.0.0.1:8000", api_key=key) as client:
    ...     client.predict("iris:production", np.array([[5.1, 3.5, 1.4, 0.2]]))
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        verify: bool | str = True,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url(url),
            headers=client_headers(resolve_api_key(api_key)),
            timeout=timeout,
            verify=verify,
        )
        self._input_names: dict[str, str] = {}

    def _do(self, call: Call[T]) -> T:
        response = self._http.request(
            call.method,
            call.path,
            params=call.params or None,
            json=call.json,
            content=call.content,
            headers=call.headers or None,
        )
        return call.parse(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # registry ----------------------------------------------------------------------
    def list_models(self) -> list[ModelInfo]:
        return self._do(Endpoints.list_models())

    def get_model(self, name: str) -> ModelInfo:
        return self._do(Endpoints.get_model(name))

    def create_model(self, name: str, description: str = "", task: str | None = None) -> ModelInfo:
        return self._do(Endpoints.create_model(name, description, task))

    def delete_model(self, name: str) -> None:
        self._do(Endpoints.delete_model(name))

    def list_versions(self, name: str) -> list[VersionInfo]:
        return self._do(Endpoints.list_versions(name))

    def get_version(self, name: str, version: int | str) -> VersionInfo:
        return self._do(Endpoints.get_version(name, version))

    def delete_version(self, name: str, version: int) -> None:
        self._do(Endpoints.delete_version(name, version))

    def push(
        self,
        path: str | Path,
        name: str,
        *,
        alias: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VersionInfo:
        """Upload a model file, or a model directory (packed as a tar), as the next
        version of ``name``, streaming it."""
        with upload_file(Path(path)) as (upload, filename):
            call = Endpoints.push(
                name,
                file_chunks(upload, progress),
                filename=filename,
                alias=alias,
                description=description,
                metadata=metadata,
            )
            return self._do(call)

    def list_aliases(self, name: str) -> list[AliasInfo]:
        return self._do(Endpoints.list_aliases(name))

    def set_alias(self, name: str, alias: str, version: int, *, force: bool = False) -> AliasInfo:
        """Point ``alias`` at ``version``; ``force`` promotes past the quality-drop and
        signature checks."""
        return self._do(Endpoints.set_alias(name, alias, version, force))

    def set_deployment(self, name: str, version: int, spec: DeploymentSpec) -> VersionInfo:
        """Set how a version is served (batching, instances, queue size, int8)."""
        return self._do(Endpoints.set_deployment(name, version, spec))

    def deployment_status(self, name: str, version: int | str) -> dict[str, Any]:
        """The live deployment of a version: state, worker pids, queue depth."""
        return self._do(Endpoints.deployment_status(name, version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._do(Endpoints.delete_alias(name, alias))

    # datasets and jobs -------------------------------------------------------------
    def push_dataset(self, path: str | Path, name: str, *, fmt: str | None = None) -> DatasetInfo:
        """Upload a CSV, Parquet or JSONL file as dataset ``name``, streaming it."""
        path = Path(path)
        call = Endpoints.push_dataset(name, file_chunks(path), filename=path.name, fmt=fmt)
        return self._do(call)

    def list_datasets(self, name: str | None = None) -> list[DatasetInfo]:
        return self._do(Endpoints.list_datasets(name))

    def get_dataset(self, ref: str) -> DatasetInfo:
        return self._do(Endpoints.get_dataset(ref))

    def submit_job(self, spec: Mapping[str, Any] | str) -> JobInfo:
        """Queue a job from a spec mapping, or from YAML or JSON text."""
        return self._do(Endpoints.submit_job(spec))

    def list_jobs(
        self, *, state: str | None = None, model: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        return self._do(Endpoints.list_jobs(state, model, limit))

    def get_job(self, job_id: str) -> JobInfo:
        return self._do(Endpoints.get_job(job_id))

    def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a job; a running one's process is stopped before this returns."""
        return self._do(Endpoints.cancel_job(job_id))

    def job_logs(self, job_id: str, *, after: int = 0, type: str | None = None) -> list[JobEvent]:
        return self._do(Endpoints.job_logs(job_id, after, type))

    def follow_job(self, job_id: str, *, after: int = 0) -> Iterator[JobEvent | JobInfo]:
        """The job's events as they happen (SSE), then its final ``JobInfo``."""
        path = Endpoints.job_events_path(job_id)
        with self._http.stream(
            "GET", path, params={"after": str(after)}, timeout=httpx.Timeout(60, read=None)
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise_for_error(response)
            parser = SseParser()
            for line in response.iter_lines():
                parsed = parser.feed(line)
                if parsed is not None:
                    yield parsed[1]
                    if parsed[0] == "end":
                        return

    def wait_job(self, job_id: str) -> JobInfo:
        """Block until the job ends; return it."""
        final: JobInfo | None = None
        for item in self.follow_job(job_id):
            if isinstance(item, JobInfo):
                final = item
        return final if final is not None else self.get_job(job_id)

    # audio and rerank ---------------------------------------------------------------
    def transcribe(
        self,
        model: str,
        audio: bytes | str | Path,
        *,
        translate: bool = False,
        language: str | None = None,
        prompt: str | None = None,
        response_format: str = "json",
    ) -> Any:
        """Speech to text (``translate``: to English) of a file or its bytes; JSON formats
        answer a dict (``text``, and segments for ``verbose_json``), the others text."""
        filename, data = named_file(audio, "audio.wav")
        return self._do(
            Endpoints.transcribe(
                model,
                data,
                filename=filename,
                translate=translate,
                language=language,
                prompt=prompt,
                response_format=response_format,
            )
        )

    def speak(
        self,
        model: str,
        text: str,
        *,
        voice: str = "alloy",
        response_format: str = "wav",
        speed: float = 1.0,
    ) -> bytes:
        """Text to speech: the audio, encoded as ``response_format`` asks."""
        return self._do(
            Endpoints.speak(model, text, voice=voice, response_format=response_format, speed=speed)
        )

    def rerank(
        self, model: str, query: str, documents: Sequence[str], *, top_n: int | None = None
    ) -> list[dict[str, Any]]:
        """``documents`` ordered by relevance to ``query``, best first."""
        return self._do(Endpoints.rerank(model, query, documents, top_n=top_n))

    def classify(
        self, ref: str, images: Sequence[bytes | str | Path], *, top_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Image classification of files or their bytes (JPEG, PNG, WebP): per image its
        ``filename`` and top ``labels`` (``label``, ``score``), best first."""
        named = [named_file(image, "image") for image in images]
        return self._do(Endpoints.classify(ref, named, top_k=top_k))

    # inference ---------------------------------------------------------------------
    def is_ready(self) -> bool:
        return self._do(Endpoints.ready())

    def model_metadata(self, ref: str) -> dict[str, Any]:
        return self._do(Endpoints.model_metadata(ref))

    def predict(
        self,
        ref: str,
        inputs: np.ndarray | Mapping[str, Any],
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``ref`` (``name``, ``name:3``, ``name:alias``) on numpy inputs.

        A single array goes to the model's only input; a mapping names the inputs.
        """
        name = None
        if not isinstance(inputs, Mapping):
            name = self._input_names.get(ref)
            if name is None:
                name = self._input_names[ref] = first_input_name(self.model_metadata(ref))
        return self._do(Endpoints.infer(ref, normalise_inputs(inputs, name), outputs))
