"""The stub engine: an engine replica without a model, for tests of the ingress and of Serve's
placement, restarts and cancellation (serving/ray/engine.py has the real one)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from fedrouter.serving.ray.engine import EngineCore, Head


class StubEngine(EngineCore):
    """No model: answers like vLLM's OpenAI server with `model` as asked and the replica's id in
    `system_fingerprint`, after `delay_s` (a generation's length; a completion whose prompt is
    "stub-sleep SECONDS" takes that long). Counts the calls cancelled while generating; `fail()` makes its health check
    fail, as a dead vLLM does."""

    def __init__(
        self,
        release: str | None = None,
        models_per_replica: int = 1,
        delay_s: float = 0.0,
        adapter_store: str | None = None,
        door: bool = False,
        **_: Any,
    ):
        super().__init__(models_per_replica, adapter_store, door)
        self.delay_s, self.healthy, self.cancelled, self.answered = delay_s, True, 0, 0
        self.adapters: set[str] = set()  # what a vLLM would have registered

    async def answer(self, path: str, body: bytes) -> AsyncIterator[Head | bytes]:
        self.answered += 1
        req = orjson.loads(body)
        model = req["model"]
        if "@" in model and model not in self.adapters:
            yield {"status": 404, "content-type": "application/json"}
            yield orjson.dumps({"error": {"message": f"{model} not found", "type": "NotFoundError", "code": 404}})
            return
        try:
            prompt = req.get("prompt")
            sleep = isinstance(prompt, str) and prompt.startswith("stub-sleep ")
            await asyncio.sleep(float(prompt.split()[1]) if sleep else self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        fingerprint = self.replica
        if req.get("stream"):
            yield {"status": 200, "content-type": "text/event-stream"}
            for text in ("a", "b"):
                chunk = {"model": model, "system_fingerprint": fingerprint, "choices": [{"text": text}]}
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                await asyncio.sleep(0)
            yield b"data: [DONE]\n\n"
            return
        yield {"status": 200, "content-type": "application/json"}
        yield orjson.dumps(
            {"id": "stub", "model": model, "system_fingerprint": fingerprint, "choices": [{"text": "ok"}]}
        )

    async def cancellations(self) -> tuple[int, int]:
        return os.getpid(), self.cancelled

    async def whoami(self) -> dict[str, Any]:
        doors = self.door.answered if self.door is not None else 0
        return {"replica": self.replica, "pid": os.getpid(), "answered": self.answered, "through_door": doors}

    async def load_adapter(self, name: str, folder: str) -> None:
        if not os.path.isdir(folder):
            raise RuntimeError(f"no adapter folder {folder}")
        self.adapters.add(name)

    async def unload_adapter(self, name: str) -> None:
        self.adapters.discard(name)

    async def fail(self) -> None:
        self.healthy = False

    async def pid(self) -> int:
        return os.getpid()

    def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("stub engine told to fail")
