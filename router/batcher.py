"""Micro-batching: concurrent callers are embedded together in one forward pass.

A single worker task drains whatever requests are waiting (up to `max_batch`), embeds them in
one call on a worker thread, and hands each caller its own result. When requests arrive one at a
time nothing waits: a lone request is embedded at once. Under load, requests that arrive while a
batch is being embedded form the next batch, so the embedder runs at its batched throughput.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(self, fn: Callable[[Sequence[str]], list[T]], max_batch: int = 64):
        self._fn = fn  # blocking: texts -> one result per text, in order
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[T]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # how many calls of fn were made (for tests and metrics)

    async def submit(self, text: str) -> T:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        await self._queue.put((text, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            items = [await queue.get()]
            while len(items) < self._max_batch and not queue.empty():
                items.append(queue.get_nowait())
            live = [(t, f) for t, f in items if not f.done()]  # a caller may have gone away
            if not live:
                continue
            try:
                results = await asyncio.to_thread(self._fn, [t for t, _ in live])
                self.batches += 1
            except Exception as e:  # every caller of the batch gets the error, the worker lives on
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(live, results):
                if not f.done():
                    f.set_result(r)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
