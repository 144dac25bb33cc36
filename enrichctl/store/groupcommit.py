"""Group commit: the tasks that finish while a commit is in progress commit together in the next
transaction, so a daily update of thousands of small series pays one transaction (and one
statement per kind of row) for several series instead of one each.

Each submission is all-or-nothing as before: its rows are in the batch's one transaction. A
batch that fails is retried one submission at a time, so each caller gets its own outcome and a
submission that cannot be stored never takes the others down with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from enrichctl.errors import StoreError

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 64  # submissions per transaction


class GroupCommit(Generic[T, R]):
    """``submit(item, key)`` resolves with ``commit([items])``'s result for the item. Items with
    the same ``key`` (one series) never share a batch: each sees the other's rows committed."""

    def __init__(self, commit: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._commit = commit
        self._pending: list[tuple[T, Hashable, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T, key: Hashable) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, key, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, keys, rest = [], set(), []
            for entry in self._pending:
                if len(batch) < MAX_BATCH and (entry[1] is None or entry[1] not in keys):
                    batch.append(entry)
                    keys.add(entry[1])
                else:
                    rest.append(entry)
            self._pending = rest
            try:
                await self._settle(batch)
            except BaseException as exc:  # cancelled (the loop stops), or a bug: tell everyone
                for _item, _key, future in batch + self._pending:
                    if not future.done():
                        future.set_exception(exc)
                self._pending = []
                raise

    async def _settle(self, batch: list[tuple[T, Hashable, asyncio.Future[R]]]) -> None:
        try:
            results = await self._commit([item for item, _key, _future in batch])
        except StoreError as exc:
            if len(batch) == 1:
                if not batch[0][2].done():
                    batch[0][2].set_exception(exc)
                return
            for entry in batch:  # one at a time: each caller gets its own outcome
                await self._settle([entry])
            return
        for (_item, _key, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
