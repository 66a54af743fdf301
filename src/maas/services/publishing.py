"""Publishing: turn an uploaded file into an immutable, inspected model version.

The one path by which artifacts enter the registry (the upload API, the demo and jobs
all use it): stream to the content-addressed store, detect the framework and the
signature by loading the artifact safely, then record the version and move aliases.
Aliases are moved through here too, so that serving learns of every change at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from maas.config import Settings
from maas.errors import (
    AliasNotFound,
    InvalidDeployment,
    InvalidInput,
    ModelNotFound,
    QualityDropTooLarge,
    SignatureChanged,
)
from maas.protocols.management import AliasInfo, DeploymentSpec, VersionInfo
from maas.protocols.signature import Signature
from maas.protocols.tensors import DATATYPES
from maas.registry.archives import ExtractLimits, discard_unpacked, is_archive, unpacked
from maas.registry.artifacts import ArtifactStore, StoredArtifact
from maas.registry.names import validate_alias, validate_name
from maas.registry.service import RegistryService
from maas.runtimes.catalog import ArtifactInfo, describe, inspect_artifact
from maas.serving.manager import ModelManager

__all__ = ["Publisher", "check_quality_drop", "check_signature"]

_WRITE_BATCH_BYTES = 1024 * 1024


def check_quality_drop(version: VersionInfo, threshold: float) -> None:
    """Refuse a version whose optimization report lost more quality than ``threshold``."""
    report = version.metadata.get("optimization")
    if not isinstance(report, dict):
        return
    drop = report.get("quality_drop")
    if isinstance(drop, int | float) and drop > threshold:
        raise QualityDropTooLarge(
            f"{version.model}:{version.version} lost {drop:.4f} of "
            f"{report.get('quality', {}).get('metric', 'quality')} in {report.get('method')}, "
            f"over the threshold of {threshold}; promote with force to do it anyway",
            details={"quality_drop": drop, "threshold": threshold},
        )


def check_signature(current: VersionInfo, signature: Signature, alias: str) -> None:
    """Refuse to point ``alias`` (now at ``current``) at a version with another signature:
    the alias's callers send and read the tensors ``current`` declares."""
    if signature == current.signature:
        return
    raise SignatureChanged(
        f"{current.model}:{alias} serves version {current.version}, whose signature differs "
        "from this version's, so its callers would break; promote with force to do it anyway",
        details={
            "alias": alias,
            "current_version": current.version,
            "current": current.signature.model_dump(),
            "new": signature.model_dump(),
        },
    )


def _declared_signature(metadata: dict[str, Any] | None) -> Signature | None:
    """The signature a push declares in its metadata (``"signature"``), for files that
    record none of their own (TorchScript)."""
    value = (metadata or {}).get("signature")
    if value is None:
        return None
    try:
        signature = Signature.model_validate(value)
    except ValueError as exc:
        raise InvalidInput(
            "the metadata's signature is not {inputs: [{name, datatype, shape}], outputs: "
            f"[…]}}: {str(exc).splitlines()[0][:200]}"
        ) from None
    for spec in [*signature.inputs, *signature.outputs]:
        if spec.datatype not in DATATYPES or spec.datatype == "BYTES":
            raise InvalidInput(
                f"the metadata's signature gives {spec.name!r} the datatype {spec.datatype!r}; "
                f"a tensor is one of {sorted(set(DATATYPES) - {'BYTES'})}"
            )
    return signature


class Publisher:
    def __init__(
        self,
        registry: RegistryService,
        store: ArtifactStore,
        models: ModelManager,
        settings: Settings,
    ) -> None:
        self._registry = registry
        self._store = store
        self._models = models
        self._settings = settings

    async def push(
        self,
        model: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str,
        alias: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        created_by: str | None = None,
    ) -> VersionInfo:
        """Store a streamed upload and register it as the next version of ``model``."""
        self._check_names(model, alias, filename)
        artifact = await self._receive(chunks)
        return await self._register(
            model, artifact, filename, alias, description, metadata, lineage, created_by
        )

    async def publish_file(
        self,
        model: str,
        path: Path,
        *,
        alias: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        created_by: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> VersionInfo:
        """Register a file already on this machine (the demo, jobs)."""
        self._check_names(model, alias, path.name)
        artifact = await asyncio.to_thread(self._store.put_file, path)
        return await self._register(
            model, artifact, path.name, alias, description, metadata, lineage, created_by, metrics
        )

    @staticmethod
    def _check_names(model: str, alias: str | None, filename: str) -> None:
        """Refuse bad names before a byte of the upload is read."""
        validate_name("model", model)
        if alias is not None:
            validate_alias(alias)
        if not filename or "/" in filename or "\\" in filename or len(filename) > 255:
            raise InvalidInput("filename must be a plain file name such as model.onnx")

    async def _receive(self, chunks: AsyncIterator[bytes]) -> StoredArtifact:
        max_bytes = self._settings.limits.max_upload_bytes
        with self._store.writer(max_bytes=max_bytes) as writer:
            pending: list[bytes] = []
            pending_bytes = 0
            async for chunk in chunks:
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= _WRITE_BATCH_BYTES:
                    await asyncio.to_thread(writer.write, b"".join(pending))
                    pending, pending_bytes = [], 0
            if pending:
                await asyncio.to_thread(writer.write, b"".join(pending))
            return await asyncio.to_thread(writer.commit)

    async def _register(
        self,
        model: str,
        artifact: StoredArtifact,
        filename: str,
        alias: str | None,
        description: str | None,
        metadata: dict[str, Any] | None,
        lineage: dict[str, Any] | None,
        created_by: str | None,
        metrics: dict[str, Any] | None = None,
    ) -> VersionInfo:
        try:
            declared = _declared_signature(metadata)
            info = await asyncio.to_thread(self._inspect, artifact.digest, filename, declared)
            if alias is not None:  # refused before a version exists, not after
                await self._check_alias_signature(model, alias, info.signature)
        except Exception:  # refused, or a bug: either way the bytes must not stay behind
            await asyncio.to_thread(self._discard_if_unused, artifact)
            raise
        version = await asyncio.to_thread(
            lambda: self._registry.create_version(
                model,
                artifact=artifact,
                filename=filename,
                framework=info.framework,
                signature=info.signature,
                metadata={**info.details, **(metadata or {})},
                metrics=metrics,
                lineage=lineage,
                created_by=created_by,
                description=description,
                task=info.task,
                deployment=info.deployment,
            )
        )
        if alias is not None:
            await self.set_alias(model, alias, version.version)
            version = await asyncio.to_thread(self._registry.get_version, model, version.version)
        return version

    def _inspect(self, digest: str, filename: str, declared: Signature | None) -> ArtifactInfo:
        """Framework and signature of a stored artifact; an archive is a packed model
        directory, inspected once unpacked (safely: no member may leave it)."""
        path = self._store.local_path(digest)
        cache = self._settings.cache_path
        if is_archive(path):
            limits = ExtractLimits.from_settings(self._settings.limits)
            path = unpacked(path, cache, limits=limits)
        return inspect_artifact(
            path,
            filename,
            trust_pickle=self._settings.serving.trust_pickle,
            cache_dir=cache,
            declared=declared,
        )

    def _discard_if_unused(self, artifact: StoredArtifact) -> None:
        """A refused push leaves nothing: its blob, and what its archive unpacked to;
        unless a version uses the bytes, or a push of the same bytes is under way."""
        if not self._registry.digest_in_use(artifact.digest) and self._store.discard(artifact):
            discard_unpacked(artifact.digest.removeprefix("sha256:"), self._settings.cache_path)

    async def set_alias(
        self, model: str, alias: str, version: int, *, force: bool = False
    ) -> AliasInfo:
        """Move an alias with no downtime: load and warm the target first (a failure
        raises ``RolloutFailed`` and the registry is left as it was), then move the
        alias in the registry, then switch serving and drain the old version.

        Unless ``force``, refused: an optimized version whose report shows a quality drop
        over the threshold (``QualityDropTooLarge``), and a version whose signature
        differs from the one the alias points to now (``SignatureChanged``)."""
        target = await asyncio.to_thread(self._registry.get_version, model, version)
        if not force:
            check_quality_drop(target, self._settings.jobs.max_quality_drop)
            await self._check_alias_signature(model, alias, target.signature)
        await self._models.prepare(target)
        info = await asyncio.to_thread(self._registry.set_alias, model, alias, version)
        await self._models.switch(model)
        return info

    async def _check_alias_signature(self, model: str, alias: str, signature: Signature) -> None:
        try:
            current = await asyncio.to_thread(self._registry.get_version, model, alias)
        except (ModelNotFound, AliasNotFound):
            return
        check_signature(current, signature, alias)

    async def delete_alias(self, model: str, alias: str) -> None:
        await asyncio.to_thread(self._registry.delete_alias, model, alias)
        await self._models.switch(model)

    async def record_metrics(
        self, model: str, version: int, metrics: dict[str, Any]
    ) -> VersionInfo:
        """Merge metrics (an evaluation's) into a version's; the artifact stays immutable."""
        return await asyncio.to_thread(self._registry.merge_metrics, model, version, metrics)

    async def update_deployment(
        self, model: str, version: int, spec: DeploymentSpec
    ) -> VersionInfo:
        """Store how a version is served; a loaded version is redeployed with no gap.

        As an alias rollout does, the new deployment is loaded and warmed first and only
        then stored: a spec this server cannot serve (503 ``placement_infeasible`` on
        a cluster too small, a load that fails) is refused and the registry keeps the
        old one, so the other servers, which follow the registry, never try it.

        Raises ``InvalidDeployment`` for a spec the version's signature cannot take and
        a ``quantize`` its runtime cannot do.
        """
        current = await asyncio.to_thread(self._registry.get_version, model, version)
        spec.check(current.signature)
        if spec.quantize is not None:
            runtime = describe(current.framework)
            offered = runtime.quantizations if runtime is not None else ()
            if spec.quantize not in offered:
                raise InvalidDeployment(
                    f"quantize {spec.quantize!r} is not available for {current.framework} "
                    "models" + (f" (they offer {', '.join(offered)})" if offered else ""),
                    details={"param": "quantize", "framework": current.framework},
                )
        await self._models.redeploy(current.model_copy(update={"deployment": spec}))
        try:
            info = await asyncio.to_thread(self._registry.update_deployment, model, version, spec)
        except BaseException:
            await self._models.redeploy(current)  # serve what the registry still says
            raise
        await self._models.redeploy(info)  # served so already: only forgets resolutions
        return info

    async def delete_version(self, model: str, version: int) -> None:
        await asyncio.to_thread(self._registry.delete_version, model, version)
        await self._models.unload(model, version)

    async def delete_model(self, model: str) -> None:
        await asyncio.to_thread(self._registry.delete_model, model)
        await self._models.unload(model)
