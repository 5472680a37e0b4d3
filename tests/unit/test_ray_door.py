"""The engines' doors (serving/ray/door.py) and the ingress's direct transport
(serving/ray/direct_transport.py), in this process without Ray: stub engines behind real doors on
loopback, real HTTP. The same on a real cluster: tests/integration/test_ray_cluster.py."""

import asyncio
import json
import socket

import httpx
import pytest

pytest.importorskip("ray.serve")

from fedrouter.serving.ray import door  # noqa: E402
from fedrouter.serving.ray.direct_transport import DirectTransport  # noqa: E402
from fedrouter.serving.ray.ring_router import SeededRing, reseed  # noqa: E402
from fedrouter.serving.ray.stub_engine import StubEngine  # noqa: E402
from tests.conftest import fake_adapter  # noqa: E402

SECRET = "s3cret"


async def open_door(engine=None):
    engine = engine or StubEngine(models_per_replica=4)
    d = door.Door(engine, SECRET)
    await d.open("127.0.0.1", register=False)
    return engine, d


def body(model, prompt="hello", **extra):
    return json.dumps({"model": model, "prompt": prompt, **extra}).encode()


async def test_a_door_answers_only_its_secret_and_only_generation_routes(tmp_path):
    engine, d = await open_door()
    try:
        async with httpx.AsyncClient(base_url=d.url) as c:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": SECRET}):
                r = await c.post("/v1/completions", content=body("base"), headers=headers)
                assert r.status_code == 401 and r.content == b""  # nothing said to a stranger
            auth = {"authorization": f"Bearer {SECRET}"}
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/load_lora_adapter"), ("GET", "/metrics")):
                r = await c.request(method, path, headers=auth)
                assert r.status_code == 404 and r.content == b""
            r = await c.post("/v1/completions", content=body("base"), headers=auth)
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == "ok"
            # an adapter: its folder comes with the request, the engine loads it on first use
            folder = str(fake_adapter(tmp_path / "a"))
            headers = {**auth, door.ADAPTER: "a@1", door.FOLDER: folder}
            r = await c.post("/v1/completions", content=body("a@1", stream=True), headers=headers)
            assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") and "a@1" in engine.adapters
            # an adapter whose folder is not on this node and whose bytes never came: not generated
            headers = {**auth, door.ADAPTER: "b@2", door.FOLDER: str(tmp_path / "elsewhere")}
            r = await c.post("/v1/completions", content=body("b@2"), headers=headers)
            assert (r.status_code, r.headers.get(door.DOOR)) == (409, "unknown-adapter")
            assert engine.answered == 2 and d.answered == 2
    finally:
        d.close()


async def test_a_client_that_goes_away_cancels_the_generation_behind_the_door():
    engine, d = await open_door()
    try:
        async with httpx.AsyncClient(base_url=d.url, timeout=httpx.Timeout(30, read=0.5)) as c:
            with pytest.raises(httpx.ReadTimeout):  # it gives up and closes its connection
                await c.post(
                    "/v1/completions",
                    content=body("base", "stub-sleep 600"),
                    headers={"authorization": f"Bearer {SECRET}"},
                )
        for _ in range(200):
            if engine.cancelled:
                break
            await asyncio.sleep(0.01)
        assert engine.cancelled == 1 and engine._inflight.total() == 0
    finally:
        d.close()


async def test_an_engine_failing_before_its_answer_is_said_in_the_doors_own_words():
    class Fails(StubEngine):
        async def answer(self, path, body):
            raise RuntimeError("vLLM unreachable")
            yield b""

    _, d = await open_door(Fails())
    try:
        async with httpx.AsyncClient(base_url=d.url) as c:
            r = await c.post("/v1/completions", content=body("base"), headers={"authorization": f"Bearer {SECRET}"})
        assert (r.status_code, r.headers.get(door.DOOR)) == (502, "failed") and "unreachable" in r.text
    finally:
        d.close()


class NoHandle:
    """The engine handle: the direct transport must not need it while a door answers."""

    def options(self, **kw):
        raise AssertionError(f"a handle call was made: {kw}")


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def send(transport, model, path="/v1/completions"):
    request = httpx.Request("POST", f"http://engine.ray{path}", content=body(model))
    response = await transport.handle_async_request(request)
    try:
        return response.status_code, json.loads(await response.aread())
    finally:
        await response.aclose()


async def test_the_direct_transport_sends_each_adapter_home_on_the_routers_ring(tmp_path):
    engines, doors = zip(*[await open_door(StubEngine(models_per_replica=4)) for _ in range(2)])
    table = {"replica-a": doors[0].url, "replica-b": doors[1].url}
    keys = [f"task{i}@{i}" for i in range(4)]
    t = DirectTransport(
        NoHandle(), "base", keys, listed=lambda: table, secret=lambda: SECRET, forget=lambda r: None, refresh_s=0
    )
    try:
        for k in keys:
            t.adapters[k] = str(fake_adapter(tmp_path / k))
        await t.refresh()
        for _ in range(3):
            for k in keys:
                assert (await send(t, k))[0] == 200
        # the same homes Serve's router computes (one ring over the same replica ids and keys)
        ring = SeededRing(keys).of(sorted(table))
        by_door = {"replica-a": engines[0], "replica-b": engines[1]}
        for k in keys:
            assert by_door[ring.home(k)]._served[k] == 3 and sum(e._served[k] for e in engines) == 3
        assert sorted(len(e._served) for e in engines) == [2, 2]  # balanced: two adapters a replica
        assert t.through == {"door": 12, "handle": 0}
        await asyncio.gather(*(send(t, k) for k in keys * 5))  # at once: every answer closed, nothing left counted
        assert [d.inflight for d in t._doors.values()] == [0, 0]
    finally:
        await t.aclose()
        for d in doors:
            d.close()


async def test_a_door_that_refuses_is_dropped_and_the_request_goes_to_the_next(tmp_path):
    engine, d = await open_door()
    dead = closed_port()
    forgotten = []
    table = {"a-dead": dead, "b-alive": d.url}
    t = DirectTransport(
        NoHandle(), "base", [], listed=lambda: table, secret=lambda: SECRET, forget=forgotten.append, refresh_s=0
    )
    try:
        await t.refresh()
        for _ in range(4):  # base-model requests take turns: the dead door is tried, and dropped
            assert (await send(t, "base"))[0] == 200
        await asyncio.sleep(0.1)
        assert set(t._doors) == {"b-alive"} and forgotten == ["a-dead"] and engine.answered == 4
    finally:
        await t.aclose()
        d.close()


async def test_without_a_door_the_request_goes_through_the_handle():
    calls = []

    class Handle:
        def options(self, **kw):
            calls.append(kw)
            return self

        def remote(self, path, content, adapter, folder, payload):
            async def answer():
                return {"status": 200, "content-type": "application/json"}, b'{"via": "handle"}'

            return answer()

    t = DirectTransport(Handle(), "base", [], listed=dict, secret=lambda: SECRET, forget=lambda r: None, refresh_s=0)
    assert await send(t, "base") == (200, {"via": "handle"})
    assert calls and t.through == {"door": 0, "handle": 1}


def test_a_publish_reseeds_the_door_choosers_ring_as_the_routers():
    ring = SeededRing(["a@1"])
    reseed(["b@2", "c@3"])
    assert ring.seed == frozenset({"b@2", "c@3"})


async def test_a_stopping_engine_lets_the_answers_under_way_through_its_door_end_first():
    """Serve drains only its own calls; `__del__` (which Serve awaits) closes the door and waits
    for the door's answers under way. A plain object without a door returns nothing to await."""
    assert StubEngine(models_per_replica=1).__del__() is None
    engine, d = await open_door()
    engine.door = d  # as the engine's own door, opened on a cluster
    async with httpx.AsyncClient(base_url=d.url, timeout=30) as c:
        auth = {"authorization": f"Bearer {SECRET}"}
        running = asyncio.create_task(c.post("/v1/completions", content=body("base", "stub-sleep 0.5"), headers=auth))
        while not engine.answered:
            await asyncio.sleep(0.01)
        await engine.__del__()  # returns once the answer under way was sent
        r = await running
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "ok" and engine.cancelled == 0
        with pytest.raises(httpx.ConnectError):  # and the door takes no new connection
            await httpx.AsyncClient(base_url=d.url).post("/v1/completions", content=body("base"), headers=auth)
