"""What the database says must stay in the artifact stores: the garbage collector's
list of references (``maas.services.orphans``).

A blob is referenced by a model version (``model_versions.digest``), by a dataset
(``datasets.digest``), or by name in a record that points back to it: a version's
lineage (the dataset a job trained on) and a job's spec and result (the dataset an
evaluation read). The last kind is found by looking for full digests anywhere in
those JSON values, so a field added later is covered without a change here: keeping a
blob by mistake costs space, deleting one by mistake loses it for good. One set serves
both stores (models and datasets); a digest named anywhere keeps its bytes in each.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maas.registry.tables import Dataset, Job, ModelVersion

__all__ = ["digest_referenced", "digests_in", "referenced_digests"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def digests_in(value: Any) -> Iterator[str]:
    """Every full ``sha256:<hex>`` digest inside a JSON value, at any depth."""
    if isinstance(value, str):
        yield from _DIGEST.findall(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from digests_in(key)
            yield from digests_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from digests_in(item)


def referenced_digests(sessions: sessionmaker[Session]) -> set[str]:
    """Every digest the database references, read in one transaction."""
    with sessions() as session:
        found = set(session.scalars(select(ModelVersion.digest)))
        found.update(session.scalars(select(Dataset.digest)))
        for lineage in session.scalars(select(ModelVersion.lineage)):
            found.update(digests_in(lineage))
        for spec, result in session.execute(select(Job.spec, Job.result)):
            found.update(digests_in(spec))
            found.update(digests_in(result))
    return found


def digest_referenced(sessions: sessionmaker[Session], digest: str) -> bool:
    """Whether a version or a dataset uses ``digest`` now: the check right before a
    delete. Lineage and job records only ever name the digests of such rows, and a
    new row always follows a write that makes the blob young (``ArtifactStore._adopt``)."""
    with sessions() as session:
        for column in (ModelVersion.digest, Dataset.digest):
            if session.scalars(select(column).where(column == digest).limit(1)).first():
                return True
    return False
