"""What ``Client`` and ``AsyncClient`` share besides the endpoints: settings and inputs."""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maas.client._core import DEFAULT_URL, UPLOAD_CHUNK_BYTES
from maas.errors import InvalidInput

__all__ = [
    "ProgressCallback",
    "base_url",
    "client_headers",
    "file_chunks",
    "local_admin_key",
    "named_file",
    "normalise_inputs",
    "resolve_api_key",
    "upload_file",
]

ProgressCallback = Any  # Callable[[int], None]: called with the bytes sent so far


def named_file(content: bytes | str | Path, default_name: str) -> tuple[str, bytes]:
    """A file sent in a form: the name and bytes of a path, or bytes as given under
    ``default_name`` (the server reads the content, not the name)."""
    if isinstance(content, bytes):
        return default_name, content
    path = Path(content)
    return path.name, path.read_bytes()


def client_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": "maas-client"}
    if api_key:
        headers["Authorization"] = f"Bearer {_checked_key(api_key)}"
    return headers


def _checked_key(api_key: str) -> str:
    """A key is printable ASCII; anything else (the README's ``maas_…``) would fail deep
    in httpx as a ``UnicodeEncodeError``, so say what is wrong before sending."""
    if api_key.isascii() and api_key.isprintable() and not any(c.isspace() for c in api_key):
        return api_key
    raise InvalidInput(
        "the API key holds characters no key has: is it a placeholder such as 'maas_…'? "
        "Pass the key the server printed, or none to use $MAAS_API_KEY or $MAAS_HOME/admin.key"
    )


def base_url(url: str | None) -> str:
    """``url``, else ``$MAAS_URL``, else the local default, as the CLI finds it."""
    return (url or os.environ.get("MAAS_URL") or DEFAULT_URL).rstrip("/")


def resolve_api_key(api_key: str | None) -> str | None:
    """``api_key``, else ``$MAAS_API_KEY``, else the admin key a server on this machine
    wrote: the SDK and the CLI find the same key with no setup."""
    if api_key is not None:
        return api_key
    return os.environ.get("MAAS_API_KEY") or local_admin_key()


def local_admin_key() -> str | None:
    """The admin key a server on this machine wrote (``$MAAS_HOME/admin.key``, then
    ``~/.maas/admin.key``), if this user may read it."""
    default = Path("~/.maas").expanduser()
    homes = [Path(os.environ.get("MAAS_HOME") or default).expanduser(), default]
    for home in homes:
        try:
            key = (home / "admin.key").read_text().strip()
        except OSError:
            continue
        if key:
            return key
    return None


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
