"""Micro-batching: concurrent callers are embedded together in one forward pass.

A single worker task drains whatever requests are waiting (up to `max_batch`), embeds them in
one call on a worker thread, and hands each caller its own result. When requests arrive one at a
time nothing waits: a lone request is embedded at once. Under load, requests that arrive while a
batch is being embedded form the next batch, so the embedder runs at its batched throughput.

One caller's text never fails another's: when a batch fails, each text in it is retried alone and
only the callers whose own text fails get the error. Every wait of a caller is bounded (`timeout_s`).

`inline=True` is for embedders cheaper than the hop to a worker thread and back (~0.1-0.2 ms; the
static embedder takes ~0.05 ms): each text is embedded at once, in the caller's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(self, fn: Callable[[Sequence[str]], list[T]], max_batch: int = 64, inline: bool = False):
        self._fn = fn  # blocking: texts -> one result per text, in order
        self._max_batch = max_batch
        self._inline = inline
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[T]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # how many calls of fn were made (for tests and metrics)

    async def submit(self, text: str, timeout_s: float | None = None) -> T:
        """This text's result; asyncio.TimeoutError after `timeout_s` (the text is then skipped)."""
        if self._inline:
            self.batches += 1
            return self._fn([text])[0]
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        self._queue.put_nowait((text, fut))
        return await asyncio.wait_for(fut, timeout_s)

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
            except Exception as e:
                if len(live) == 1:
                    _settle(live[0][1], error=e)
                    continue
                for t, f in live:  # find whose text failed: each alone, the worker lives on
                    try:
                        (r,) = await asyncio.to_thread(self._fn, [t])
                        self.batches += 1
                        _settle(f, r)
                    except Exception as e1:
                        _settle(f, error=e1)
                continue
            for (_, f), r in zip(live, results):
                _settle(f, r)

    async def close(self) -> None:
        """Stop the worker; callers still waiting get a RuntimeError."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, f = self._queue.get_nowait()
            _settle(f, error=RuntimeError("the micro-batcher was closed"))


def _settle(f: asyncio.Future, result: object = None, error: Exception | None = None) -> None:
    if f.done():  # the caller went away or timed out
        return
    if error is not None:
        f.set_exception(error)
    else:
        f.set_result(result)
