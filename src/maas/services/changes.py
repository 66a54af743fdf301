"""``ChangeFollower``: apply what other servers of the database changed, within a second.

Any number of ``maas serve`` processes may share one database, one Redis and one
artifact store. A change made through one of them is applied there at once (the
``Publisher`` and ``KeyStore`` paths); the registry also records it in its change feed
(``maas.registry.changes``), which every server reads here each
``serving.changes_poll_s`` (a quarter of a second) with one query on the feed's primary
key, and applies:

- ``key``: forget the cached API keys at once (a revoked key is refused from now on);
- ``version``: forget the model's cached resolutions (``latest`` moved);
- ``alias``: forget them, then ``ModelManager.switch`` (load and warm what aliases
  point to now, drain and unload what none needs any more);
- ``deployment``: redeploy the version if it is loaded here with another spec;
- ``version_deleted`` / ``model_deleted``: unload it.

Resolutions and keys are forgotten in the poll itself; the model work (loads can take
minutes) runs in one task per model, in feed order, so that a slow load never holds
back a key revocation or another model's change. Applying is idempotent: the server
that made a change reads it too, finds it done, and does nothing harmful (a redeploy to
the spec already served is skipped; switching to aliases already followed loads and
unloads nothing).

A poll that fails (the database away) is retried at the next tick; after a failure the
first good poll also resynchronises from the registry (every loaded version checked),
since rows older than ``changes_retention_s`` may have been pruned meanwhile. Any server
prunes the feed every minute; pruning twice deletes nothing twice.

Redis pub/sub could wake the servers sooner, but the feed must be read anyway (a
message is lost while a server is away, a row is not), and a quarter of a second is
well within the second promised, so the database is the one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from maas.auth.resolver import KeyResolver
from maas.errors import MaasError, ModelNotFound, VersionNotFound
from maas.registry.changes import Change, ChangeLog
from maas.registry.service import RegistryService
from maas.serving.manager import ModelManager

__all__ = ["ChangeFollower"]

log = logging.getLogger("maas.changes")

#: Seconds between two prunes of the feed by one server.
_PRUNE_EVERY_S = 60.0
#: Changes read by one query.
_PAGE = 1000


class ChangeFollower:
    def __init__(
        self,
        feed: ChangeLog,
        registry: RegistryService,
        models: ModelManager,
        principals: KeyResolver,
        *,
        poll_s: float = 0.25,
        retention_s: float = 3600.0,
    ) -> None:
        self._feed = feed
        self._registry = registry
        self._models = models
        self._principals = principals
        self._poll_s = poll_s
        self._retention_s = retention_s
        self._last_id = 0
        self._task: asyncio.Task[None] | None = None
        #: Per model: the changes waiting for its task, and the task applying them.
        self._queued: dict[str, list[Change]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._pruned_at = 0.0

    async def start(self) -> None:
        """Begin after the newest change: what came before is in the registry that the
        server read as it started."""
        self._last_id = await asyncio.to_thread(self._feed.latest_id)
        self._pruned_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="change feed")

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._workers.clear()

    async def _run(self) -> None:
        failing = False
        while True:
            full = False
            try:
                changes = await asyncio.to_thread(self._feed.since, self._last_id, _PAGE)
            except Exception as exc:  # the database away: try again at the next tick
                if not failing:
                    log.error("cannot read the change feed: %r", exc)
                failing = True
            else:
                if failing:
                    log.info("the change feed answers again; resynchronising")
                    failing = False
                    self._resync()
                self._take(changes)
                full = len(changes) == _PAGE  # more may wait: read again at once
                if not changes:
                    await self._prune_now_and_then()
            if not full:
                await asyncio.sleep(self._poll_s)

    def _take(self, changes: list[Change]) -> None:
        """Apply what is instant now; queue the model work per model."""
        for change in changes:
            self._last_id = change.id
            if change.kind == "key":
                self._principals.forget()
                continue
            if change.model is None:
                continue
            if change.kind != "deployment":  # a new version or alias, a deletion
                self._models.invalidate(change.model)
            if change.kind == "version":
                continue
            self._queue(change.model, [change])

    def _queue(self, model: str, changes: Iterable[Change]) -> None:
        self._queued.setdefault(model, []).extend(changes)
        worker = self._workers.get(model)
        if worker is None or worker.done():
            self._workers[model] = asyncio.create_task(
                self._drain(model), name=f"changes of {model}"
            )

    async def _drain(self, model: str) -> None:
        while queued := self._queued.pop(model, None):
            for change in _without_repeats(queued):
                try:
                    await self._apply(change)
                except MaasError as exc:  # a load that fails is logged, as at start
                    log.error("applying %s of %s failed: %s", change.kind, model, exc.message)
                except Exception:
                    log.exception("applying %s of %s failed", change.kind, model)
        self._workers.pop(model, None)

    async def _apply(self, change: Change) -> None:
        assert change.model is not None
        model = change.model
        if change.kind == "alias":
            await self._models.switch(model)
        elif change.kind == "deployment" and change.version is not None:
            await self._redeploy(model, change.version)
        elif change.kind == "version_deleted" and change.version is not None:
            await self._models.unload(model, change.version)
        elif change.kind == "model_deleted":
            await self._models.unload(model)

    async def _redeploy(self, model: str, version: int) -> None:
        if self._models.find(model, version) is None:
            return  # not loaded here: a later load reads the new spec
        try:
            info = await asyncio.to_thread(self._registry.get_version, model, version)
        except (ModelNotFound, VersionNotFound):
            await self._models.unload(model, version)  # deleted since
            return
        await self._models.redeploy(info)

    def _resync(self) -> None:
        """After the feed was unreadable: forget every cached answer, redeploy loaded
        versions whose spec changed and follow every model's aliases."""
        self._principals.forget()
        self._models.invalidate()
        loaded = {d.version.model for d in self._models.loaded()}
        for deployment in self._models.loaded():
            model, version = deployment.key
            self._queue(model, [Change(0, "deployment", model, version)])
        for model in loaded:
            self._queue(model, [Change(0, "alias", model, None)])

    async def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = time.monotonic()
        with contextlib.suppress(Exception):  # the next prune will do
            pruned = await asyncio.to_thread(self._feed.prune, self._retention_s)
            if pruned:
                log.info("pruned %d changes older than %.0f s", pruned, self._retention_s)


def _without_repeats(changes: list[Change]) -> list[Change]:
    """One application of each kind of change per version: applying reads the registry
    as it is now, so the last of equal changes does what all of them would."""
    seen: set[tuple[str, int | None]] = set()
    kept: list[Change] = []
    for change in reversed(changes):
        what = (change.kind, change.version)
        if what not in seen:
            seen.add(what)
            kept.append(change)
    return kept[::-1]
