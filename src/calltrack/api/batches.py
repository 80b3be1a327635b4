"""Group commit: store calls that arrive while one runs wait, and go together in the next.

A PBX's events are small writes, and most of a write's cost is its transaction: the thread
hop, the commit, the pages written again for every request (bench/RESULTS.md, telephony).
With many requests at once, one transaction for all of them costs little more than one for
each, so requests queue here and a single worker thread takes whatever has queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class GroupCommit(Generic[_Item, _Result]):
    """``await submit(item)``: ``run(items)`` on the items that queued meanwhile, in a thread
    of ``threads``, one batch at a time, at most ``limit`` items a batch. (Two batches at
    once on PostgreSQL, one waiting for the database while the other runs, measured worse:
    smaller batches, telephony 321 -> 198 calls/s, hits' p99 80 -> 103 ms.)

    ``run`` gives one result per item, in order; a result that is an exception is raised to
    that item's caller alone, and an exception out of ``run`` to every caller of its batch.
    No item waits for a timer: a batch starts as soon as the one before it is done, so a lone
    request goes at once, and under load the batches grow with the queue.
    """

    def __init__(
        self,
        run: Callable[[list[_Item]], list[_Result | Exception]],
        threads: Executor,
        limit: int = 64,
    ) -> None:
        self._run, self._threads, self._limit = run, threads, limit
        self._queue: list[tuple[_Item, asyncio.Future[_Result]]] = []
        # The task taking batches, while it runs (kept: the loop holds tasks weakly). It is
        # cleared in the task itself, so an item queued after its last look starts another.
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: _Item) -> _Result:
        future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._limit], self._queue[self._limit :]
                # A caller gone meanwhile (its client hung up) is not run: nothing of it was
                # stored, and nobody waits for the answer.
                batch = [(item, future) for item, future in batch if not future.done()]
                if batch:
                    await self._run_batch(batch)
        finally:
            self._drainer = None

    async def _run_batch(self, batch: list[tuple[_Item, asyncio.Future[_Result]]]) -> None:
        try:
            items = [item for item, _ in batch]
            results = await asyncio.wrap_future(self._threads.submit(self._run, items))
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the server stops): no caller is left waiting
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
