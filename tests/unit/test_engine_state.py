"""The engine's adapter state has one owner (serving/reload.py): the keeper's registrations, reloads
and retirements never interleave, a failed reload never unloads what a live release uses, and
vLLM only ever reads adapters from the content-addressed store. A fake vLLM (an httpx transport)
records what it was asked to load, and from where."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace

import httpx
import pytest

from fedrouter.router.adapter_files import adapter_digest
from fedrouter.router.embed import HashEmbedder
from fedrouter.router.release import load_release, write_release
from fedrouter.serving.adapter_store import AdapterStore
from fedrouter.serving.backends import BackendPool
from fedrouter.serving.errors import BackendUnavailable
from fedrouter.serving.loader import AdapterLoader
from fedrouter.serving.metrics import GatewayMetrics
from fedrouter.serving.registry import Registry, engine_names
from fedrouter.serving.reload import Reloader
from fedrouter.serving.settings import GatewaySettings
from tests.conftest import fake_adapter
from tests.unit.test_gateway import FakeVLLM, make_release

NAMES = ("math", "geo", "sentiment")


class EngineVLLM(FakeVLLM):
    """A fake vLLM closer to the real one where it matters here: loading a name it holds answers
    400 "already loaded"; `hidden` names are loaded but missing from /v1/models (a listing that lags);
    `hold(name)` is awaited before a load of that name completes; `refuse` names are refused."""

    def __init__(self):
        super().__init__()
        self.loaded: set[str] = set()  # what vLLM really holds (`served` is what it lists)
        self.hidden: set[str] = set()
        self.refuse: set[str] = set()
        self.paths: dict[str, str] = {}  # vLLM name -> the lora_path it was given
        self.hold = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/models":
            self.served = {self.base} | (self.loaded - self.hidden)
            return super().__call__(request)
        if path == "/v1/load_lora_adapter":
            body = json.loads(request.content)
            name = body["lora_name"]
            if self.hold is not None:
                await self.hold(name)
            if name in self.refuse:
                return httpx.Response(400, text="rank too large")
            if name in self.loaded:
                return httpx.Response(400, text=f"The lora adapter '{name}' has already been loaded.")
            self.loaded.add(name)
            self.paths[name] = body["lora_path"]
            return httpx.Response(200, text="ok")
        if path == "/v1/unload_lora_adapter":
            self.loaded.discard(json.loads(request.content)["lora_name"])
            return httpx.Response(200, text="ok")
        return super().__call__(request)


def release_of(tmp_path, folder: str, seed: int, names=NAMES):
    adapters = {n: fake_adapter(tmp_path / f"src{seed}" / n, seed=seed + i) for i, n in enumerate(names)}
    return make_release(tmp_path / folder, adapters)


def owner(tmp_path, vllm: EngineVLLM) -> tuple[Reloader, BackendPool]:
    settings = GatewaySettings(backends=["http://fake"], drain_timeout_s=5, adapter_store=tmp_path / "store")
    pool = BackendPool(settings.backends, settings, transport=httpx.MockTransport(vllm))
    reloader = Reloader(
        Registry(GatewayMetrics()),
        pool,
        AdapterLoader(pool, concurrency=4),
        AdapterStore(settings.adapter_store),
        GatewayMetrics(),
        settings,
        max_lora_rank=None,
        embedder=HashEmbedder(256),
    )
    return reloader, pool


def vllm_names(release) -> set[str]:
    return set(engine_names(release).values())


def test_a_keeper_pass_overlapping_a_reload_never_leaves_the_retired_release_loaded(tmp_path):
    """The keeper re-registers v1 in a restarted vLLM while v2 is being loaded; once v1 is retired,
    none of its adapters may stay loaded (before: the keeper's late loads left them for good)."""
    v1, v2 = release_of(tmp_path, "v1", 0), release_of(tmp_path, "v2", 10)
    vllm = EngineVLLM()

    async def main():
        reloader, pool = owner(tmp_path, vllm)
        await reloader.install_first(v1)
        vllm.loaded.clear()  # vLLM restarted: it holds nothing
        reload_and_retire: asyncio.Task | None = None

        async def switch() -> None:
            await reloader.load(v2.path)
            await asyncio.gather(*reloader.retiring)

        async def hold(name: str) -> None:
            """A keeper's load of a v1 adapter is slow: the reload (and the retirement) get their
            chance to run meanwhile; the bound only ends the wait where they cannot run."""
            nonlocal reload_and_retire
            if name not in vllm_names(v1):
                return
            if reload_and_retire is None:
                reload_and_retire = asyncio.create_task(switch())
            await asyncio.wait({reload_and_retire}, timeout=2)

        vllm.hold = hold
        await reloader.keep_registered()
        assert reload_and_retire is not None
        await reload_and_retire
        await pool.close()

    asyncio.run(main())
    assert vllm_names(v2) <= vllm.loaded
    assert not vllm.loaded & vllm_names(v1), "a retired release's adapters stayed loaded"


@pytest.mark.parametrize("answer", ["already loaded", "loaded again"])
def test_a_failed_reload_never_unloads_an_adapter_the_live_release_uses(tmp_path, answer):
    """v2 shares `math` with the live v1 (same weights, same vLLM name); vLLM refuses its `geo`. vLLM's listing lags (math loaded, not listed), so the reload loads math too: whether
    vLLM answers "already loaded" or loads it again, undoing the failed reload must leave it."""
    v1 = release_of(tmp_path, "v1", 0)
    adapters = {n: fake_adapter(tmp_path / "src-v2" / n, seed=90 + i) for i, n in enumerate(NAMES)}
    v2 = make_release(tmp_path / "v2", {**adapters, "math": v1.adapter_dir("math")})
    vllm = EngineVLLM()
    math = engine_names(v1)["math"]
    assert engine_names(v2)["math"] == math

    async def main():
        reloader, pool = owner(tmp_path, vllm)
        await reloader.install_first(v1)
        vllm.hidden = {math}
        if answer == "loaded again":
            vllm.loaded.discard(math)  # vLLM loads it afresh (200), as after a restart
        vllm.refuse = {engine_names(v2)["geo"]}
        with pytest.raises(BackendUnavailable, match="refused adapter"):
            await reloader.load(v2.path)
        await pool.close()

    asyncio.run(main())
    assert math in vllm.loaded, "the failed reload unloaded an adapter the live release serves"
    assert not vllm.loaded & (vllm_names(v2) - {math})  # v2's own adapters were undone


def test_vllm_reads_adapters_only_from_the_content_addressed_store(tmp_path):
    """Rewriting or deleting a release folder after registration changes nothing vLLM can re-read."""
    v1 = release_of(tmp_path, "v1", 0)
    store = tmp_path / "store"
    vllm = EngineVLLM()

    async def main():
        reloader, pool = owner(tmp_path, vllm)
        await reloader.install_first(v1)
        given = dict(vllm.paths)
        # rewrite one adapter of the release in place, then delete the whole release folder
        fake_adapter(v1.adapter_dir("math"), seed=1234)
        shutil.rmtree(v1.path)
        vllm.loaded.clear()  # a restart: the keeper registers again, from the same store folders
        await reloader.keep_registered()
        await pool.close()
        return given

    given = asyncio.run(main())
    digests = v1.manifest.digests
    names = engine_names(v1)
    for adapter, name in names.items():
        folder = store / digests[adapter]
        assert given[name] == str(folder) == vllm.paths[name]  # the path names the digest
        assert adapter_digest(folder) == digests[adapter]  # intact
        assert all((f.stat().st_mode & 0o222) == 0 for f in [folder, *folder.iterdir()])  # read-only


def test_the_store_refuses_files_that_changed_after_validation(tmp_path):
    release = release_of(tmp_path, "v1", 0)
    digest = release.manifest.digests["math"]
    fake_adapter(release.adapter_dir("math"), seed=77)  # changed after load_release checked it
    with pytest.raises(ValueError, match="changed after validation"):
        AdapterStore(tmp_path / "store").put(digest, release.adapter_dir("math"))
    assert not (tmp_path / "store" / digest).exists()
    assert load_release  # (the release itself is refused at its next load: digest mismatch)


def test_a_reload_that_changes_only_the_centroids_switches_routing(tmp_path):
    """Same adapters, same manifest fields, two clusters' centroids swapped: a new release (before,
    its digest was the old one's: `unchanged`, and routing kept the old centroids)."""
    v1 = release_of(tmp_path, "v1", 0)
    swap = [1, 0, 2]
    folders = {n: v1.adapter_dir(n) for n in NAMES}
    m = replace(v1.manifest, digests={}, digest="", centroids_digest="")
    v2 = write_release(tmp_path / "v2", m, v1.centroids[swap], folders, update_latest=False)
    prompt = "What is 14 plus 27?"

    async def main():
        reloader, pool = owner(tmp_path, EngineVLLM())
        await reloader.install_first(v1)
        registry = reloader._registry
        before = await registry.resolve("auto", lambda: prompt)
        before.done()
        answer = await reloader.load(v2.path)
        after = await registry.resolve("auto", lambda: prompt)
        after.done()
        await asyncio.gather(*reloader.retiring)
        await pool.close()
        return before.public, answer["status"], after.public

    before, status, after = asyncio.run(main())
    assert status == "switched"
    assert after == NAMES[swap[NAMES.index(before)]] != before
