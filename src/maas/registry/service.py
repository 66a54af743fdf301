"""``RegistryService``: create, resolve, alias and delete models and versions.

Synchronous by design (SQLAlchemy sessions); the API calls it from a thread. Every
method is one transaction and returns protocol value objects, never ORM rows, so
nothing outside the registry can lazily touch the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from maas.errors import (
    AliasNotFound,
    ModelExists,
    ModelNotFound,
    VersionInUse,
    VersionNotFound,
)
from maas.protocols.bounds import MAX_VERSION
from maas.protocols.management import AliasInfo, DeploymentSpec, ModelInfo, VersionInfo
from maas.protocols.signature import Signature
from maas.registry import changes
from maas.registry.artifacts import ArtifactStore, StoredArtifact
from maas.registry.names import validate_alias, validate_name
from maas.registry.tables import Alias, Model, ModelVersion

__all__ = ["DEFAULT_ALIAS", "RegistryService"]

#: The alias a reference without a selector uses when it exists.
DEFAULT_ALIAS = "production"


def _model_info(model: Model) -> ModelInfo:
    numbers = [v.version for v in model.versions]
    return ModelInfo(
        name=model.name,
        description=model.description,
        task=model.task,
        created_at=model.created_at,
        latest_version=max(numbers) if numbers else None,
        aliases={alias.name: alias.version.version for alias in model.aliases},
    )


def _version_info(row: ModelVersion, aliases: list[str]) -> VersionInfo:
    return VersionInfo(
        model=row.model.name,
        version=row.version,
        framework=row.framework,
        digest=row.digest,
        size_bytes=row.size_bytes,
        filename=row.filename,
        signature=Signature.model_validate(row.signature),
        metadata=row.metadata_,
        metrics=row.metrics,
        lineage=row.lineage,
        deployment=DeploymentSpec.model_validate(row.deployment or {}),
        created_at=row.created_at,
        created_by=row.created_by,
        aliases=sorted(aliases),
    )


def _no_version(model: str, number: int) -> str:
    if number > MAX_VERSION:
        return f"model {model!r} has no version past {MAX_VERSION}"
    return f"model {model!r} has no version {number}"


class RegistryService:
    def __init__(self, sessions: sessionmaker[Session], store: ArtifactStore) -> None:
        self._sessions = sessions
        self._store = store

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- models ----------------------------------------------------------------------

    def _model(self, session: Session, name: str, *, lock: bool = False) -> Model:
        query = select(Model).where(Model.name == name)
        if lock:
            query = query.with_for_update()
        model = session.scalars(query).one_or_none()
        if model is None:
            raise ModelNotFound(f"model {name!r} not found")
        return model

    def create_model(self, name: str, description: str = "", task: str | None = None) -> ModelInfo:
        validate_name("model", name)
        try:
            with self._session() as session:
                model = Model(name=name, description=description or "", task=task)
                session.add(model)
                session.flush()
                return _model_info(model)
        except IntegrityError:
            raise ModelExists(f"model {name!r} already exists") from None

    def get_model(self, name: str) -> ModelInfo:
        with self._session() as session:
            return _model_info(self._model(session, name))

    def list_models(self) -> list[ModelInfo]:
        with self._session() as session:
            query = (
                select(Model)
                .order_by(Model.name)
                .options(selectinload(Model.versions), selectinload(Model.aliases))
            )
            return [_model_info(model) for model in session.scalars(query)]

    def delete_model(self, name: str) -> None:
        """Delete a model with its aliases and versions, and artifacts no one else uses."""
        with self._session() as session:
            model = self._model(session, name)
            digests = {v.digest for v in model.versions}
            for alias in list(model.aliases):
                session.delete(alias)
            session.flush()
            session.delete(model)
            changes.record(session, "model_deleted", name)
        self._collect(digests)

    # -- versions --------------------------------------------------------------------

    def create_version(
        self,
        model_name: str,
        *,
        artifact: StoredArtifact,
        filename: str,
        framework: str,
        signature: Signature,
        metadata: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        lineage: dict[str, Any] | None = None,
        deployment: DeploymentSpec | None = None,
        created_by: str | None = None,
        description: str | None = None,
        task: str | None = None,
        create_model: bool = True,
    ) -> VersionInfo:
        """Record the next version of ``model_name`` (created if missing)."""
        validate_name("model", model_name)
        if create_model:
            with suppress(ModelExists):
                self.create_model(model_name, description or "", task)
        with self._session() as session:
            model = self._model(session, model_name, lock=True)
            number = session.scalar(
                update(Model)
                .where(Model.id == model.id)
                .values(next_version=Model.next_version + 1)
                .returning(Model.next_version)
            )
            assert number is not None
            row = ModelVersion(
                model=model,
                version=number - 1,
                framework=framework,
                digest=artifact.digest,
                size_bytes=artifact.size_bytes,
                filename=filename,
                signature=signature.model_dump(mode="json"),
                metadata_=metadata or {},
                metrics=metrics or {},
                lineage=lineage or {},
                deployment=(deployment or DeploymentSpec()).model_dump(mode="json"),
                created_by=created_by,
            )
            session.add(row)
            session.flush()
            changes.record(session, "version", model_name, row.version)
            return _version_info(row, [])

    def _versions_query(self, model: Model) -> Select[ModelVersion]:
        return (
            select(ModelVersion)
            .where(ModelVersion.model_id == model.id)
            .options(selectinload(ModelVersion.model))
        )

    def _aliases_by_version(self, session: Session, model: Model) -> dict[int, list[str]]:
        result: dict[int, list[str]] = {}
        for alias in session.scalars(select(Alias).where(Alias.model_id == model.id)):
            result.setdefault(alias.version_id, []).append(alias.name)
        return result

    def list_versions(self, name: str) -> list[VersionInfo]:
        with self._session() as session:
            model = self._model(session, name)
            aliases = self._aliases_by_version(session, model)
            rows = session.scalars(self._versions_query(model).order_by(ModelVersion.version))
            return [_version_info(row, aliases.get(row.id, [])) for row in rows]

    def _resolve_row(
        self, session: Session, model: Model, selector: int | str | None
    ) -> ModelVersion:
        if selector is None:
            alias = self._alias_row(session, model, DEFAULT_ALIAS)
            if alias is not None:
                return alias.version
            selector = "latest"
        if isinstance(selector, int):
            if not 1 <= selector <= MAX_VERSION:  # no such version; too large for SQL
                raise VersionNotFound(_no_version(model.name, selector))
            row = session.scalars(
                self._versions_query(model).where(ModelVersion.version == selector)
            ).one_or_none()
            if row is None:
                raise VersionNotFound(_no_version(model.name, selector))
            return row
        if selector == "latest":
            row = session.scalars(
                self._versions_query(model).order_by(ModelVersion.version.desc()).limit(1)
            ).one_or_none()
            if row is None:
                raise VersionNotFound(f"model {model.name!r} has no versions")
            return row
        alias = self._alias_row(session, model, selector)
        if alias is None:
            raise AliasNotFound(f"model {model.name!r} has no alias {selector!r}")
        return alias.version

    def _alias_row(self, session: Session, model: Model, name: str) -> Alias | None:
        query = select(Alias).where(Alias.model_id == model.id, Alias.name == name)
        return session.scalars(query).one_or_none()

    def get_version(self, name: str, selector: int | str | None = None) -> VersionInfo:
        """``None``: the ``production`` alias if set, else the latest; ``"latest"``: the
        highest number; another string: that alias; an int: that version."""
        with self._session() as session:
            model = self._model(session, name)
            row = self._resolve_row(session, model, selector)
            return _version_info(row, self._aliases_by_version(session, model).get(row.id, []))

    def delete_version(self, name: str, version: int) -> None:
        with self._session() as session:
            model = self._model(session, name)
            row = self._resolve_row(session, model, version)
            aliases = self._aliases_by_version(session, model).get(row.id, [])
            if aliases:
                raise VersionInUse(
                    f"{name}:{version} is aliased as {', '.join(sorted(aliases))}; "
                    "move or remove the aliases first",
                    details={"aliases": sorted(aliases)},
                )
            digest = row.digest
            session.delete(row)
            changes.record(session, "version_deleted", name, version)
        self._collect({digest})

    def update_deployment(self, name: str, version: int, spec: DeploymentSpec) -> VersionInfo:
        """Change how a version is served; its artifact and signature stay immutable.

        Raises ``InvalidDeployment`` when the spec cannot serve this version's signature.
        """
        with self._session() as session:
            model = self._model(session, name)
            row = self._resolve_row(session, model, version)
            spec.check(Signature.model_validate(row.signature))
            row.deployment = spec.model_dump(mode="json")
            session.flush()
            changes.record(session, "deployment", name, row.version)
            return _version_info(row, self._aliases_by_version(session, model).get(row.id, []))

    def merge_metrics(self, name: str, version: int, metrics: dict[str, Any]) -> VersionInfo:
        """Add metrics to a version; nested dicts (``eval`` per dataset) merge one level."""
        with self._session() as session:
            model = self._model(session, name)
            row = self._resolve_row(session, model, version)
            merged = dict(row.metrics or {})
            for key, value in metrics.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
            row.metrics = merged
            session.flush()
            return _version_info(row, self._aliases_by_version(session, model).get(row.id, []))

    def digest_in_use(self, digest: str) -> bool:
        with self._session() as session:
            count = session.scalar(
                select(func.count()).select_from(ModelVersion).where(ModelVersion.digest == digest)
            )
            return bool(count)

    def _collect(self, digests: set[str]) -> None:
        """Delete artifacts that no version references any more."""
        for digest in digests:
            if not self.digest_in_use(digest):
                self._store.delete(digest)

    # -- aliases ---------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> AliasInfo:
        validate_alias(alias)
        with self._session() as session:
            model = self._model(session, name, lock=True)
            row = self._resolve_row(session, model, version)
            existing = self._alias_row(session, model, alias)
            if existing is None:
                session.add(Alias(model_id=model.id, name=alias, version_id=row.id))
            else:
                existing.version_id = row.id
            changes.record(session, "alias", name)
            return AliasInfo(model=name, alias=alias, version=row.version)

    def delete_alias(self, name: str, alias: str) -> None:
        with self._session() as session:
            model = self._model(session, name)
            existing = self._alias_row(session, model, alias)
            if existing is None:
                raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
            session.delete(existing)
            changes.record(session, "alias", name)

    def list_aliases(self, name: str) -> list[AliasInfo]:
        with self._session() as session:
            model = self._model(session, name)
            query = select(Alias).where(Alias.model_id == model.id).order_by(Alias.name)
            return [
                AliasInfo(model=name, alias=a.name, version=a.version.version)
                for a in session.scalars(query)
            ]

    def aliased_versions(self) -> list[VersionInfo]:
        """Every version some alias points to: what a server loads at start."""
        with self._session() as session:
            rows = session.scalars(
                select(ModelVersion)
                .where(ModelVersion.id.in_(select(Alias.version_id)))
                .options(selectinload(ModelVersion.model))
            )
            found = list(rows)
            names: dict[int, list[str]] = {}
            for alias in session.scalars(select(Alias)):
                names.setdefault(alias.version_id, []).append(alias.name)
            return [_version_info(row, names.get(row.id, [])) for row in found]
