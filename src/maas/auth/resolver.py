"""From a presented key to a ``Principal``, at most one SQL lookup per key per second.

The inference hot path must not query SQL per request, yet a revoked key must stop
working within about a second on every worker. So each process keeps what a key
resolved to (including "no such key") for ``ttl_s``: one HMAC and one dict lookup per
request, and one indexed query per key per second. An answer past half its time is
renewed ahead by one background query while callers keep getting it, so a key in
steady use never expires under the calls in flight (which each queried at once, in a
thread, once a second: the tail latency of a loaded server). A revocation made through this
process's own ``KeyStore`` empties the cache at once (its ``revision`` moved), so the
server that revoked a key never honours it again; other servers of the database when
their change feed brings the revocation (``maas.services.changes``, a quarter of a
second), and within ``ttl_s`` in any case.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from maas.auth.keys import KeyStore
from maas.auth.principal import Principal

__all__ = ["KeyResolver"]

log = logging.getLogger("maas.auth")


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None
    expires_epoch: float | None  # the key's own expiry
    fresh_until: float  # monotonic


class KeyResolver:
    def __init__(self, store: KeyStore, *, ttl_s: float = 1.0, max_entries: int = 100_000) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._cache: dict[str, _Entry] = {}
        self._revision = store.revision
        #: Bumped by ``forget``: an answer read before it is not cached after it.
        self._forgotten = 0
        #: The keys (by digest) being renewed ahead of their expiry, one task each.
        self._renewing: dict[str, asyncio.Task[_Entry]] = {}

    async def resolve(self, key: str) -> Principal | None:
        """The principal of a live, unexpired key, or ``None``."""
        digest = self._store.hasher.digest(key)
        now = time.monotonic()
        revision = self._store.revision
        if revision != self._revision:  # a key was revoked here: forget every answer
            self._cache.clear()
            self._revision = revision
        entry = self._cache.get(digest)
        if entry is None or entry.fresh_until <= now:
            entry = await self._look_up(key, digest, now)
        elif entry.fresh_until - now < self._ttl_s / 2 and digest not in self._renewing:
            self._renew(key, digest, now)
        if entry.expires_epoch is not None and time.time() >= entry.expires_epoch:
            return None
        return entry.principal

    async def _look_up(self, key: str, digest: str, now: float) -> _Entry:
        """Query the store and cache the answer, unless a revocation came meanwhile."""
        revision, forgotten = self._store.revision, self._forgotten
        found = await asyncio.to_thread(self._store.find, key)
        entry = _entry(found, time.monotonic() + self._ttl_s)
        if len(self._cache) >= self._max_entries:
            self._evict(now)
        if self._store.revision == revision and self._forgotten == forgotten:
            self._cache[digest] = entry
        return entry

    def _renew(self, key: str, digest: str, now: float) -> None:
        """Query ``key`` again in the background; if that fails (the database away) the
        answer expires as it would have, and the caller then gets the error itself."""
        task = asyncio.get_running_loop().create_task(self._look_up(key, digest, now))
        self._renewing[digest] = task
        task.add_done_callback(lambda done: self._renewed(digest, done))

    def _renewed(self, digest: str, done: asyncio.Task[_Entry]) -> None:
        self._renewing.pop(digest, None)
        if not done.cancelled() and done.exception() is not None:
            log.debug("renewing a key's answer failed: %r", done.exception())

    def forget(self) -> None:
        """Drop every cached answer: another server revoked a key (its change reached
        this one through the registry's change feed, ``maas.services.changes``)."""
        self._forgotten += 1
        self._cache.clear()

    def _evict(self, now: float) -> None:
        # Random invalid keys must not grow the cache without bound.
        stale = [digest for digest, entry in self._cache.items() if entry.fresh_until <= now]
        for digest in stale:
            del self._cache[digest]
        if len(self._cache) >= self._max_entries:
            self._cache.clear()


def _entry(found: tuple[Principal, datetime | None] | None, fresh_until: float) -> _Entry:
    if found is None:
        return _Entry(None, None, fresh_until)
    principal, expires_at = found
    return _Entry(principal, expires_at.timestamp() if expires_at else None, fresh_until)
