"""The file a runtime loads: an artifact of the store, on this machine."""

from __future__ import annotations

from pathlib import Path

from maas.registry.archives import ExtractLimits, is_archive, unpacked
from maas.registry.artifacts import ArtifactStore

__all__ = ["local_artifact"]


def local_artifact(
    store: ArtifactStore, digest: str, cache_dir: Path | None, limits: ExtractLimits
) -> Path:
    """The verified artifact on this machine (a remote store's copy is fetched into its
    cache first); an archive (a model directory packed for upload) unpacked next to the
    cache once. Blocking: call it off the event loop.

    The server calls it for the models it loads itself, and each Ray replica on its own
    node: every node reaches the store (a shared directory or an fsspec URL), none has
    to receive the bytes from the server."""
    path = store.local_path(digest, verify=True)
    if cache_dir is not None and is_archive(path):
        return unpacked(path, cache_dir, limits=limits)
    return path
