"""The engine deployment: one replica per GPU (or CPU node), each supervising its own vLLM.

A request arrives from an ingress replica through a DeploymentHandle with the adapter's content
name (`name@digest`) as its multiplexed model id, and the adapter folder beside it. The request
router (serving/ray/ring_router.py) sends an adapter's requests to its home replica; a replica
loads an adapter on first use (`@serve.multiplexed`, LRU beyond `models_per_replica`) and unloads
it from its vLLM when Serve evicts it — once no request of this replica uses it, and not if it
was loaded again meanwhile. Nothing else ever unloads an adapter: no ingress can take one away
from another ingress that still serves it.

The answer is streamed back as it comes: first `{"status", "content-type"}`, then the body's bytes.
Cancelling the handle call (the client went away) cancels the generator here, which closes the
connection to vLLM: vLLM aborts the generation.

Variants in one registry (`ENGINES`, serving/ray/app.py): `vllm` (the real one, supervised as the
single gateway supervises it, serving/supervisor.py: vLLM listens on no TCP port but on a Unix
socket in a fresh 0700 folder, with a random key, so only its replica's user can reach it — its
unguarded routes, /adapters and /invocations, included), `attached` (a running OpenAI server at a
URL: the benchmark's stand-in that answers at once) and `stub` (serving/ray/stub_engine.py: no
model, for tests).

Adapter folders come from the ingress as its gateway registered them: the content-addressed store
(serving/adapter_store.py, `<store>/<digest>/`), never a release folder, so a name always reads the
weights its digest names even after the release folder is gone. Beside the folder comes a reference
to the adapter's bytes in Ray's object store: a replica on a node where that folder is not (no
shared filesystem) fetches them once into its own node's store (`adapter_store`, default the
node's `$FEDROUTER_CACHE/adapters`), where the digest is checked again, and vLLM reads that copy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from ray import serve

from fedrouter.serving.adapter_store import AdapterStore
from fedrouter.serving.ray.door import Door, cluster_secret, node_address, stopped
from fedrouter.serving.ray.release_shelf import local_release
from fedrouter.serving.supervisor import VLLMSupervisor, async_http_client, unix_socket
from fedrouter.serving.transport import HotTransport

log = logging.getLogger("fedrouter.serving")
Head = dict[str, Any]  # {"status": int, "content-type": str}, the first item of every answer


class EngineCore:
    """What both engine variants share: multiplexed adapter loading and the in-flight count per
    adapter that keeps an evicted adapter in vLLM until its last request here is answered."""

    drain_s = 55.0  # at shutdown, how long the door's answers under way may take (Serve's grace: 60 s)

    def __init__(self, models_per_replica: int, adapter_store: str | None = None, door: bool = False):
        """`door`: also take requests through a door on this node's address (serving/ray/door.py),
        opened once the constructor returned, on a Ray cluster only."""
        self._paths: dict[str, str] = {}  # content name -> adapter folder, as the ingress sent it
        self._payloads: dict[str, list[Any]] = {}  # content name -> [ref to its files], as the ingress sent it
        self._store = AdapterStore(Path(adapter_store) if adapter_store else None)  # this node's
        self.fetched: list[str] = []  # digests this replica fetched from the object store
        self._inflight: Counter[str] = Counter()
        self._loads: Counter[str] = Counter()  # how many times each name was loaded here
        self._served: Counter[str] = Counter()  # requests answered here per content name (benchmarks)
        self.cores = ""  # the cores its vLLM computes on, where this replica chose them (cpu_binding)
        self._idle = asyncio.Condition()
        self._kept: dict[str, Any] = {}  # local testing mode only
        self._locks: dict[str, asyncio.Lock] = {}  # per content name: a load and an unload never interleave
        self._unloading: set[asyncio.Task] = set()

        # The per-replica model count is a deployment argument, so the loader is wrapped here
        # rather than with a decorator at class definition.
        async def adapter(model_id: str) -> Any:
            return await self._load(model_id)

        self._adapter = serve.multiplexed(max_num_models_per_replica=max(1, models_per_replica))(adapter)
        self.door: Door | None = None
        self._door_task: asyncio.Task | None = None
        if door:
            import ray

            if ray.is_initialized():  # Serve runs the constructor on the replica's event loop
                self._door_task = asyncio.get_running_loop().create_task(self._open_door())

    async def _open_door(self) -> None:
        try:
            door = Door(self, await asyncio.to_thread(cluster_secret))
            await door.open(node_address(), self.replica)
            self.door = door
            log.info("engine replica %s: door at %s", self.replica, door.url)
        except Exception:  # the handle path still works: say why the door did not open
            log.exception("engine replica %s: the door did not open; requests come through Ray's handle", self.replica)

    async def door_url(self) -> str:
        """Where this replica's door listens ("" if it has none)."""
        if self._door_task is not None:
            await asyncio.shield(self._door_task)
        return self.door.url if self.door is not None else ""

    def has_folder(self, folder: str) -> bool:
        return Path(folder).is_dir()

    def __del__(self) -> Any:
        """Serve's replica shutdown, which awaits what this returns: with a door, unlist it, stop
        taking connections and let the answers under way end (Serve drains its own calls itself,
        not the door's), at most `drain_s`. None where there is nothing to wait for (a plain object
        collected by Python never returns a coroutine nobody awaits)."""
        door = getattr(self, "door", None)
        if door is None or door._server is None:
            return None
        self.door = None  # once: Python calls __del__ again when it collects the object
        door.close()
        return stopped(door._server, self.drain_s)

    async def generate(
        self,
        path: str,
        body: bytes,
        adapter: str | None = None,
        folder: str | None = None,
        payload: list[Any] | None = None,
    ) -> AsyncIterator[Head | bytes]:
        """One OpenAI request (`body` as vLLM takes it). `adapter`: its content name, also the
        call's multiplexed model id (which only steers Serve's choice of replica; local testing
        mode does not carry it), with its `folder` and `payload` ([ref to its files], or None);
        None for the base model."""
        model = adapter
        if not model:  # the base model: any replica
            async for item in self.answer(path, body):
                yield item
            return
        if folder is None:
            raise ValueError(f"adapter {model!r} comes without its folder")
        self._paths[model] = folder
        if payload is not None:
            self._payloads[model] = payload
        self._served[model] += 1
        self._inflight[model] += 1
        try:
            await self._ensure(model)
            async for item in self.answer(path, body):
                yield item
        finally:
            self._inflight[model] -= 1
            async with self._idle:
                self._idle.notify_all()

    async def complete(
        self,
        path: str,
        body: bytes,
        adapter: str | None = None,
        folder: str | None = None,
        payload: list[Any] | None = None,
    ) -> tuple[Head, bytes]:
        """`generate` for an answer that is not streamed: head and body in one result (a unary
        call costs Ray one object where a streamed one costs one per item)."""
        head: Head | None = None
        parts: list[bytes] = []
        async for item in self.generate(path, body, adapter, folder, payload):
            if head is None:
                head = item  # type: ignore[assignment]
            else:
                parts.append(item)  # type: ignore[arg-type]
        assert head is not None
        return head, b"".join(parts)

    async def _ensure(self, model: str) -> None:
        if self.replica != "local":
            await self._adapter(model)
        elif model not in self._kept:  # local testing mode has no @serve.multiplexed: load once, keep
            self._kept[model] = await self._load(model)

    async def _load(self, model_id: str) -> Any:
        async with self._lock(model_id):
            self._loads[model_id] += 1
            generation = self._loads[model_id]
            await self.load_adapter(model_id, await self._local_folder(model_id))

        async def evicted() -> None:
            """Called by Serve on LRU eviction, inside the lock it loads models under: the unload
            runs in the background, so a load on this replica never waits for a long generation."""
            task = asyncio.get_running_loop().create_task(self._unload_when_idle(model_id, generation))
            self._unloading.add(task)
            task.add_done_callback(self._unloading.discard)

        loaded = _Loaded(model_id)
        loaded.__del__ = evicted  # an instance attribute: Serve calls it, the garbage collector never does
        return loaded

    async def _unload_when_idle(self, model_id: str, generation: int) -> None:
        async with self._idle:
            await self._idle.wait_for(lambda: self._inflight[model_id] <= 0)
        async with self._lock(model_id):  # not between a reload's count and its load
            if self._loads[model_id] == generation:  # not loaded again since this eviction
                await self.unload_adapter(model_id)

    async def _local_folder(self, model_id: str) -> str:
        """The adapter's folder on this node: the ingress's own (same node, or a shared filesystem),
        else this node's store copy, fetched once from the object store and checked by digest."""
        folder = Path(self._paths[model_id])
        if folder.is_dir():
            return str(folder)
        payload = self._payloads.get(model_id)
        if not payload:
            raise RuntimeError(f"adapter {model_id!r}: {folder} is not on this node and no copy came with it")
        files = await payload[0]
        local = await asyncio.to_thread(self._store.put_files, folder.name, files)
        self.fetched.append(folder.name)
        return str(local)

    def _lock(self, model_id: str) -> asyncio.Lock:
        return self._locks.setdefault(model_id, asyncio.Lock())

    @property
    def replica(self) -> str:
        return replica_id()

    async def loaded(self) -> list[str]:
        """The content names this replica's vLLM holds (for tests and /admin)."""
        wrapper = getattr(self._adapter, "__serve_multiplex_wrapper", None)
        return list(wrapper.models) if wrapper is not None else list(self._kept)

    async def served(self) -> dict[str, Any]:
        """This replica's id and the requests it took per content name (benchmarks/ray_throughput.py)."""
        return {"replica": self.replica, "counts": dict(self._served), "cores": self.cores}

    # the variant's part
    async def answer(self, path: str, body: bytes) -> AsyncIterator[Head | bytes]:
        raise NotImplementedError
        yield b""

    async def load_adapter(self, name: str, folder: str) -> None:
        raise NotImplementedError

    async def unload_adapter(self, name: str) -> None:
        raise NotImplementedError


class _Loaded:
    def __init__(self, name: str):
        self.name = name


class HTTPEngine(EngineCore):
    """A replica in front of one OpenAI server reached over HTTP (vLLM's, or a stand-in) at `url`:
    `http(s)://HOST:PORT` or `unix:PATH`."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        models_per_replica: int,
        request_timeout_s: float = 600.0,
        adapter_store: str | None = None,
        door: bool = False,
    ):
        super().__init__(models_per_replica, adapter_store, door)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(request_timeout_s, connect=5.0)
        self.client = async_http_client(url, timeout=timeout, headers=headers)  # adapter loading
        # generations: aiohttp, as the single gateway reaches vLLM (serving/transport.py: cheaper per request)
        uds = unix_socket(url)
        json = {**headers, "content-type": "application/json"}
        self.hot = HotTransport("http://vllm" if uds else url.rstrip("/"), json, request_timeout_s, uds=uds)

    async def answer(self, path: str, body: bytes) -> AsyncIterator[Head | bytes]:
        r = await self.hot.send("POST", path, body)
        try:
            yield {"status": r.status_code, "content-type": r.headers.get("content-type", "application/json")}
            async for chunk in r.aiter_raw():
                yield chunk
        finally:
            await r.aclose()  # cut short (the request was cancelled): vLLM aborts the generation

    async def load_adapter(self, name: str, folder: str) -> None:
        r = await self.client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": folder})
        if r.status_code != 200 and "already" not in r.text:
            raise RuntimeError(f"vLLM refused adapter {name!r} ({r.status_code}: {r.text[:300]})")

    async def unload_adapter(self, name: str) -> None:
        await self.client.post("/v1/unload_lora_adapter", json={"lora_name": name})


class AttachedEngine(HTTPEngine):
    """A replica in front of an OpenAI server it does not start (`url`): benchmarks against a stub
    that answers at once, so that the Ray hops are measured alone."""

    def __init__(
        self,
        url: str,
        models_per_replica: int,
        release: str | None = None,
        api_key: str | None = None,
        adapter_store: str | None = None,
        door: bool = False,
        **_: Any,  # the release's digest and cache (unused: no vLLM to start)
    ):
        super().__init__(url, api_key, models_per_replica, adapter_store=adapter_store, door=door)


class VLLMEngine(HTTPEngine):
    """A replica supervising its own vLLM OpenAI server (flags from the release it starts with)."""

    def __init__(
        self,
        release: str,
        models_per_replica: int,
        vllm_args: list[str] | None = None,
        kv_cache_gib: int = 2,
        start_timeout_s: float = 900.0,
        request_timeout_s: float = 600.0,
        adapter_store: str | None = None,  # this node's copies of adapters fetched from other nodes
        release_digest: str = "",  # shipped to the cluster: read from this node's copy (release_shelf.py)
        release_cache: str | None = None,
        door: bool = False,  # serving/ray/door.py
    ):
        slots = str(max(1, models_per_replica))
        # --max-loras after the release's own flags (argparse keeps the last): this replica holds
        # at most its share of the adapters, so that is all vLLM reserves room for.
        extra = [*(vllm_args or []), "--max-loras", slots, "--max-cpu-loras", slots]
        key = secrets.token_urlsafe(32)
        # port None: a private Unix socket in a 0700 folder, as the single gateway's vLLM
        bind = cpu_binding()
        self.supervisor = VLLMSupervisor(None, extra, kv_cache_gib, None, key, env=bind)
        try:
            self.supervisor.start(local_release(release, release_digest, release_cache))
            self.supervisor.wait_healthy(start_timeout_s)
        except BaseException:
            self.supervisor.close()
            raise
        super().__init__(self.supervisor.url, key, models_per_replica, request_timeout_s, adapter_store, door)
        self.cores = bind.get(CPU_BIND, "")

    def check_health(self) -> None:
        """Raising makes Serve replace this replica (and with it, its vLLM)."""
        if not self.supervisor.alive():
            raise RuntimeError(f"vLLM exited:\n{self.supervisor.log_tail(15)}")

    def __del__(self) -> Any:
        """Serve's replica shutdown: vLLM and its socket folder go with it, after the door's
        answers under way (EngineCore.__del__)."""
        drained = super().__del__()
        if drained is None:
            self.supervisor.close()
            return None

        async def then() -> None:
            try:
                await drained
            finally:
                self.supervisor.close()

        return then()


CPU_BIND = "VLLM_CPU_OMP_THREADS_BIND"  # vLLM's CPU backend: the cores its compute threads are bound to


def own_cores(local_rank: int, cores: int, available: Sequence[int]) -> str:
    """The `cores` of `available` (the node's, in order) that the engine replica of rank
    `local_rank` on its node computes on, as vLLM reads them ("2,3"): replica i takes the i-th
    slice, wrapping around once the replicas ask for more cores than the node has."""
    if not available:
        raise ValueError("no cores available")
    cores = max(1, min(cores, len(available)))
    start = local_rank * cores
    return ",".join(str(available[(start + i) % len(available)]) for i in range(cores))


def cpu_binding() -> dict[str, str]:
    """Where this replica runs vLLM on CPUs, its own cores: as many as Serve gave the replica
    (`engine_num_cpus`, at least 1), picked by the replica's rank on its node. vLLM's default
    (`auto`) binds every vLLM process of a NUMA node to the same cores: two engine replicas on one
    node both computed on core 0 (the other core left to vLLM's front ends), and one stalled for seconds while the
    other answered (seen on this project's 2-core machine). Empty, vLLM's own choice standing,
    where the replica has a GPU, where the user set VLLM_CPU_OMP_THREADS_BIND, and outside a Serve
    replica (local testing mode)."""
    if CPU_BIND in os.environ:
        return {}
    try:
        import ray

        rank = serve.get_replica_context().rank
        if not ray.is_initialized() or ray.get_gpu_ids():
            return {}
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        local_rank = rank if isinstance(rank, int) else rank.local_rank
    except Exception:  # no replica context: vLLM's default
        return {}
    return {CPU_BIND: own_cores(local_rank, int(cpus), sorted(os.sched_getaffinity(0)))}


def replica_id() -> str:
    """This replica's id in Serve ("local" in local testing mode, which has no replica context)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:
        return "local"
