"""Loading and unloading LoRA adapters in every vLLM replica (vLLM's runtime endpoints,
VLLM_ALLOW_RUNTIME_LORA_UPDATING). The request path (serving/backends.py) never does this.

A replica that is down gets the adapters when it is back (`lacking`, used by the keeper); what one
call loaded is returned, so that a failed reload can undo exactly that and nothing another release
had loaded. Who may call these, and when, is decided by serving/reload.py (one lock).

Unloading happens only where this gateway is the replicas' one user (`unloads`: its supervised
vLLM, or attached replicas declared its own with `sole_gateway`). Otherwise `unload` does nothing:
another gateway attached to the same replicas may serve the very names this one retires or undoes
(a name is content-derived, so two gateways serving the same adapter share it), and unloading them
would fail its requests until its keeper loaded them back. vLLM's LRU (--max-cpu-loras) then evicts
the unused ones from memory; vLLM re-reads a name from its store folder if it is used again.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from fedrouter.serving.backends import Backend, BackendPool
from fedrouter.serving.errors import BackendUnavailable

log = logging.getLogger("fedrouter.serving")


class AdapterLoader:
    def __init__(self, pool: BackendPool, *, concurrency: int, timeout_s: float = 120.0, unloads: bool = True):
        self._pool = pool
        self.unloads = unloads  # False: replicas another gateway may share; nothing is ever unloaded
        self._concurrency = max(1, concurrency)  # adapters loaded at once into one replica
        self._timeout_s = timeout_s  # loading one adapter

    def lacking(self, names: set[str]) -> list[Backend]:
        """Healthy replicas that do not serve all of `names` (restarted, or down at a reload)."""
        return [b for b in self._pool.backends if b.healthy and not names <= b.served]

    async def register(self, names: dict[str, str], keep: set[str] = frozenset()) -> list[tuple[Backend, str]]:
        """Load adapters (vLLM name -> folder) into every replica that is up and lacks them; what
        was loaded, to undo. Replicas load in parallel, each up to `concurrency` adapters
        at a time (vLLM reads the files while the next request is on the wire; sequential loading
        made a 64-adapter reload ~8x slower than a 4-adapter one). A replica that goes down
        meanwhile is skipped (it gets them when it is back); none up, or a replica refusing an
        adapter, raises BackendUnavailable after undoing what it loaded, except the names in `keep`
        (a live release's: vLLM may list them late, and a load of one is then not ours to undo)."""
        await self._pool.refresh()
        up = [b for b in self._pool.backends if b.healthy]
        loaded: list[tuple[Backend, str]] = []

        async def load(b: Backend, gate: asyncio.Semaphore, name: str, path: str) -> None:
            async with gate:
                if not b.healthy:  # went down during this registration
                    return
                try:
                    r = await b.client.post(
                        "/v1/load_lora_adapter",
                        json={"lora_name": name, "lora_path": path},
                        timeout=self._timeout_s,
                    )
                except httpx.HTTPError as e:
                    if b.healthy:
                        log.warning("vLLM at %s is down (%r); it gets the adapters when it is back", b.url, e)
                    b.healthy = False
                    return
                except asyncio.CancelledError:  # a sibling failed: vLLM may still load this one
                    loaded.append((b, name))
                    raise
                if r.status_code != 200 and "already" not in r.text:
                    raise BackendUnavailable(
                        f"vLLM at {b.url} refused adapter {name!r} ({r.status_code}: {r.text[:300]}); "
                        "it needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, --enable-lora and access to the folder"
                    )
                b.served.add(name)
                if r.status_code == 200:  # "already loaded" was loaded by someone else: not ours to undo
                    loaded.append((b, name))

        try:
            gates = {b.url: asyncio.Semaphore(self._concurrency) for b in up}
            tasks = [
                asyncio.ensure_future(load(b, gates[b.url], name, path))
                for b in up
                for name, path in names.items()
                if name not in b.served
            ]
            try:  # the first refusal (or a bug) stops the others
                if tasks:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            failed = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
            if failed:
                raise failed[0]
            if not any(b.healthy for b in up):
                raise BackendUnavailable("no vLLM replica is reachable to register the adapters")
        except BaseException:
            await self.unload([(b, n) for b, n in loaded if n not in keep])  # `keep`: a live release's
            raise
        return loaded

    async def unload(self, pairs: list[tuple[Backend, str]]) -> None:
        """Unload (replica, vLLM name) pairs, best effort and concurrently (as `register`): a
        replica that is down has nothing loaded. Nothing at all when replicas may be shared."""
        if not self.unloads or not pairs:
            return
        gates = {b.url: asyncio.Semaphore(self._concurrency) for b, _ in pairs}

        async def one(b: Backend, name: str) -> None:
            async with gates[b.url]:
                try:
                    r = await b.client.post("/v1/unload_lora_adapter", json={"lora_name": name}, timeout=30.0)
                    b.served.discard(name)
                    if r.status_code not in (200, 404):
                        log.warning("vLLM at %s kept adapter %s (%s: %s)", b.url, name, r.status_code, r.text[:200])
                except httpx.HTTPError as e:
                    log.warning("could not unload %s from %s: %r", name, b.url, e)

        await asyncio.gather(*(one(b, name) for b, name in pairs))

    async def unregister(self, names: set[str]) -> None:
        """Unload vLLM names from every replica (best effort)."""
        await self.unload([(b, n) for b in self._pool.backends for n in sorted(names)])
