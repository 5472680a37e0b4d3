import asyncio

import numpy as np
import pytest

from fedrouter.router.batcher import MicroBatcher
from fedrouter.router.build import build_release
from fedrouter.router.embed import HashEmbedder
from fedrouter.router.router import Router
from tests.tiny import TASK_EXAMPLES, write_examples


@pytest.fixture
def release(tmp_path, fake_adapters):
    return build_release(
        tmp_path / "v1",
        base_model="base",
        adapters=fake_adapters,
        examples=write_examples(tmp_path / "ex"),
        embedder=HashEmbedder(256),
    )


def test_examples_route_to_their_adapter(release):
    router = Router(release, HashEmbedder(256))
    for task, prompts in TASK_EXAMPLES.items():
        assert {r.adapter for r in router.route_batch(prompts)} == {task}


def test_route_reports_score_and_margin(release):
    route = Router(release, HashEmbedder(256)).route("What is the capital of Italy?")
    assert route.adapter == "geo" and route.cluster == 1
    expected = HashEmbedder(256).embed(["What is the capital of Italy?"])[0] @ release.centroids.T  # [K]
    assert route.score == pytest.approx(float(expected.max()), abs=1e-5)
    assert route.margin == pytest.approx(float(np.sort(expected)[-1] - np.sort(expected)[-2]), abs=1e-5)


@pytest.mark.parametrize("fallback, expected", [("base", None), ("nearest", "geo")])
def test_below_threshold_falls_back(release, fallback, expected):
    release.manifest.routing.threshold = 0.99
    release.manifest.routing.fallback = fallback
    route = Router(release, HashEmbedder(256)).route("What is the capital of Italy?")
    assert route.adapter == expected and route.cluster == 1


def test_router_rejects_embedder_of_other_dimension(release):
    with pytest.raises(ValueError, match="64-d vectors"):
        Router(release, HashEmbedder(64))


async def test_micro_batching_returns_each_caller_its_own_route(release):
    router = Router(release, HashEmbedder(256))
    calls = []

    def slow_route_batch(texts):
        calls.append(len(texts))
        import time

        time.sleep(0.05)  # a forward pass: requests arriving meanwhile form the next batch
        return router.route_batch(texts)

    batcher = MicroBatcher(slow_route_batch, max_batch=64)
    prompts = [(task, p) for task, ps in TASK_EXAMPLES.items() for p in ps]
    routes = await asyncio.gather(*(batcher.submit(p) for _, p in prompts))
    assert [r.adapter for r in routes] == [task for task, _ in prompts]
    assert sum(calls) == len(prompts) and len(calls) < len(prompts)
    await batcher.close()


async def test_micro_batcher_lone_request_and_errors():
    def fn(texts):
        if "boom" in texts:
            raise RuntimeError("embedder failed")
        return [t.upper() for t in texts]

    batcher = MicroBatcher(fn)
    assert await batcher.submit("a") == "A"
    with pytest.raises(RuntimeError, match="embedder failed"):
        await batcher.submit("boom")
    assert await batcher.submit("b") == "B"  # the worker survives an error
    await batcher.close()


async def test_inline_micro_batcher_embeds_in_the_callers_thread():
    import threading

    threads = []

    def fn(texts):
        threads.append(threading.get_ident())
        if "boom" in texts:
            raise RuntimeError("embedder failed")
        return [t.upper() for t in texts]

    batcher = MicroBatcher(fn, inline=True)
    assert await asyncio.gather(batcher.submit("a"), batcher.submit("b")) == ["A", "B"]
    with pytest.raises(RuntimeError, match="embedder failed"):
        await batcher.submit("boom")
    assert await batcher.submit("c") == "C"
    assert set(threads) == {threading.get_ident()} and batcher.batches == 4
    await batcher.close()
