"""What ``Client`` and ``AsyncClient`` share besides the endpoints: settings and inputs."""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maas.client._core import DEFAULT_URL, UPLOAD_CHUNK_BYTES

__all__ = [
    "ProgressCallback",
    "client_headers",
    "file_chunks",
    "normalise_inputs",
    "upload_file",
]

ProgressCallback = Any  # Callable[[int], None]: called with the bytes sent so far


def client_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": "maas-client"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def base_url(url: str | None) -> str:
    return (url or DEFAULT_URL).rstrip("/")


def file_chunks(path: Path, progress: ProgressCallback | None = None) -> Iterator[bytes]:
    """Read a file lazily so that uploads stream without holding the file in memory."""
    sent = 0
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK_BYTES):
            sent += len(chunk)
            if progress is not None:
                progress(sent)
            yield chunk


@contextlib.contextmanager
def upload_file(path: Path) -> Iterator[tuple[Path, str]]:
    """The file to upload for ``path`` and its name: the file itself, or a directory
    (a transformers model saved with ``save_pretrained``) packed as a tar on disk first,
    so even a large model streams without being held in memory."""
    if not path.is_dir():
        yield path, path.name
        return
    with tempfile.TemporaryDirectory(prefix="maas-push-") as tmp:
        archive = Path(tmp) / f"{path.name}.tar"
        with tarfile.open(archive, "w") as tar:
            for member in sorted(path.rglob("*")):
                if member.is_file() and not member.name.startswith("."):
                    tar.add(member, arcname=str(member.relative_to(path)))
        yield archive, archive.name


def normalise_inputs(
    inputs: np.ndarray | Mapping[str, Any], input_name: str | None
) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        return {name: np.asarray(value) for name, value in inputs.items()}
    assert input_name is not None
    return {input_name: np.asarray(inputs)}
