"""Shared document builds for ``serve``: many clients asking for the same document within a
moment cost one build.

A finished build is served for ``max_age`` seconds after it started (its ``generated_at`` says
when), and concurrent requests join a build in flight. A state change made through this app
(``invalidate``: pause, resume, trigger, a run ending) retires every earlier build, so a client
that POSTs pause and then GETs the overview always sees its own write. Failed builds are never
kept: the next request builds again.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

DOCUMENT_MAX_AGE_S = 1.0  # a dashboard polls every few seconds; runs take seconds to hours
PRUNE_ABOVE = 256  # entries (one per document and symbol) before finished old ones are dropped


@dataclass(frozen=True, slots=True)
class Rendered:
    """A document with its HTTP status and its serialised body."""

    status: int
    body: bytes
    doc: Any


@dataclass(frozen=True, slots=True)
class _Entry:
    generation: int
    started: float
    future: asyncio.Future[Rendered]

    def usable(self, generation: int, now: float, max_age: float) -> bool:
        if self.generation != generation:
            return False
        if not self.future.done():
            return True
        return (now - self.started <= max_age and not self.future.cancelled()
                and self.future.exception() is None)


class SharedBuilds:
    """``await builds.get(key, build)``: the result of a current build of ``key``, or a new one."""

    def __init__(self, max_age: float = DOCUMENT_MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.generation = 0
        self._clock = clock
        self._entries: dict[tuple[str, ...], _Entry] = {}

    def invalidate(self) -> None:
        self.generation += 1

    async def get(self, key: tuple[str, ...], build: Callable[[], Awaitable[Rendered]]) -> Rendered:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or not entry.usable(self.generation, now, self.max_age):
            if len(self._entries) >= PRUNE_ABOVE:
                self._prune(now)
            entry = _Entry(self.generation, now, asyncio.ensure_future(build()))
            self._entries[key] = entry
            entry.future.add_done_callback(functools.partial(self._done, key, entry))
        # Shielded: one client hanging up must not cancel the build the others wait for.
        return await asyncio.shield(entry.future)

    def _done(self, key: tuple[str, ...], entry: _Entry, future: asyncio.Future[Rendered]) -> None:
        failed = future.cancelled() or future.exception() is not None  # retrieves it: no warning
        if failed and self._entries.get(key) is entry:
            del self._entries[key]

    def _prune(self, now: float) -> None:
        for key, entry in list(self._entries.items()):
            if entry.future.done() and not entry.usable(self.generation, now, self.max_age):
                del self._entries[key]
