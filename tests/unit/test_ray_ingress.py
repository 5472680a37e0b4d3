"""The Ray Serve ingress's logic in Serve's local testing mode (every deployment in this process)
with the stub engine; the real cluster is in tests/integration/test_ray_cluster.py."""

import asyncio
import json

import pytest

pytest.importorskip("ray.serve")

from fastapi.testclient import TestClient  # noqa: E402
from ray import serve  # noqa: E402

from fedrouter.router.build import build_release  # noqa: E402
from fedrouter.router.embed import HashEmbedder  # noqa: E402
from fedrouter.serving.ray.app import RaySpec, build  # noqa: E402
from fedrouter.serving.ray.ingress import gateway_app  # noqa: E402
from fedrouter.serving.ray.stub_engine import StubEngine  # noqa: E402
from fedrouter.serving.registry import backend_adapter_name  # noqa: E402
from tests.conftest import fake_adapter  # noqa: E402
from tests.tiny import write_examples  # noqa: E402


def make_release(folder, adapters):
    return build_release(
        folder,
        base_model="base",
        adapters=adapters,
        examples=write_examples(folder.parent / f"ex-{folder.name}"),
        embedder=HashEmbedder(256),
    )


@pytest.fixture
def releases(tmp_path):
    names = ("math", "geo", "sentiment")
    v1 = make_release(tmp_path / "v1", {n: fake_adapter(tmp_path / "a1" / n, seed=i) for i, n in enumerate(names)})
    v2 = make_release(tmp_path / "v2", {n: fake_adapter(tmp_path / "a2" / n, seed=9 + i) for i, n in enumerate(names)})
    return v1, v2


def local(deployment_app, name):
    return serve.run(deployment_app, name=name, route_prefix=None, _local_testing_mode=True)


class Recording(StubEngine):
    """The stub engine, remembering what it was asked."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[tuple[str | None, str]] = []
        self.folders: list[str | None] = []

    async def generate(self, path, body, adapter=None, folder=None, payload=None):
        self.calls.append((adapter, json.loads(body)["model"]))
        self.folders.append(folder)
        async for item in super().generate(path, body, adapter, folder, payload):
            yield item

    async def seen(self):
        return self.calls

    async def seen_folders(self):
        return self.folders


class DiesMidAnswer(StubEngine):
    """Sends the head and one chunk, then fails (an engine replica dying mid-generation)."""

    calls = 0

    async def answer(self, path, body):
        DiesMidAnswer.calls += 1
        yield {"status": 200, "content-type": "text/event-stream"}
        yield b'data: {"choices":[{"text":"a"}]}\n\n'
        raise RuntimeError("replica died")


@pytest.fixture
def gateway(releases):
    engine = local(serve.deployment(Recording).bind(models_per_replica=2), "engine")
    with TestClient(gateway_app({"release": str(releases[0].path)}, engine)) as client:
        yield client, engine


def chat(client, model, text="What is the capital of Italy?", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return client.post("/v1/chat/completions", json=body)


def test_auto_goes_to_the_engine_under_the_adapters_content_name(gateway, releases):
    client, engine = gateway
    r = chat(client, "auto")
    assert r.status_code == 200, r.text
    geo = backend_adapter_name("geo", releases[0].manifest.digests["geo"])
    assert engine.seen.remote().result()[-1] == (geo, geo)  # multiplexed id and vLLM model name
    assert r.json()["model"] == "geo"  # clients only ever see the public name
    assert r.headers["x-fedrouter-adapter"] == "geo" and r.headers["x-fedrouter-release"] == "v1"


def test_engines_are_sent_the_adapters_store_folder_not_the_release_folder(releases, tmp_path):
    v1 = releases[0]
    engine = local(serve.deployment(Recording).bind(models_per_replica=2), "engine-store")
    store = tmp_path / "store"
    with TestClient(gateway_app({"release": str(v1.path), "adapter_store": str(store)}, engine)) as client:
        assert chat(client, "math").status_code == 200
    (folder,) = engine.seen_folders.remote().result()
    assert folder == str(store / v1.manifest.digests["math"])  # the folder its content name's digest names


def test_base_model_requests_carry_no_adapter(gateway):
    client, engine = gateway
    r = client.post("/v1/completions", json={"model": "base", "prompt": "hi"})
    assert r.status_code == 200 and r.json()["model"] == "base"
    assert engine.seen.remote().result()[-1] == (None, "base")


def test_streaming_passes_through_with_public_names(gateway):
    client, _ = gateway
    r = client.post("/v1/completions", json={"model": "math", "prompt": "hi", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert [json.loads(e[6:])["model"] for e in events[:-1]] == ["math", "math"]


def test_openai_errors_come_from_the_ingress(gateway):
    client, engine = gateway
    r = chat(client, "nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = chat(client, "auto", max_tokens=-1)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert engine.seen.remote().result() == []  # refused at the edge: no engine call


def test_an_engine_dying_mid_answer_ends_the_stream_with_an_error_and_is_not_sent_again(releases):
    DiesMidAnswer.calls = 0
    engine = local(serve.deployment(DiesMidAnswer).bind(models_per_replica=2), "dying")
    with TestClient(gateway_app({"release": str(releases[0].path)}, engine)) as client:
        r = client.post("/v1/completions", json={"model": "base", "prompt": "hi", "stream": True})
        events = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert json.loads(events[0][6:])["choices"][0]["text"] == "a"  # what was delivered stays delivered
        assert json.loads(events[-2][6:])["error"]["code"] == "service_unavailable"
        assert events[-1] == "data: [DONE]"  # the client's SSE loop ends normally
        assert DiesMidAnswer.calls == 1


def test_retired_adapters_stay_in_the_engines(releases):
    """An ingress retiring a release forgets its names but never unloads them from an engine:
    another ingress may still be draining it; engines evict by LRU when they need room."""
    v1, v2 = releases
    engine = local(serve.deployment(Recording).bind(models_per_replica=8), "engine-retire")
    app = gateway_app({"release": str(v1.path), "drain_timeout_s": 5}, engine)
    with TestClient(app) as client:
        assert chat(client, "geo").status_code == 200
        assert client.portal.call(app.state.reloader.load, str(v2.path))["status"] == "switched"

        async def retired():
            await asyncio.gather(*app.state.reloader.retiring)

        client.portal.call(retired)
        r = chat(client, "geo")
        assert r.headers["x-fedrouter-release"] == "v2"
        transport = app.state.pool.backends[0].transport
    geo_v1 = backend_adapter_name("geo", v1.manifest.digests["geo"])
    assert geo_v1 in engine.loaded.remote().result()
    assert geo_v1 not in transport.adapters  # forgotten by the ingress: its map does not grow per publish
    assert backend_adapter_name("geo", v2.manifest.digests["geo"]) in transport.adapters


def test_publishes_land_in_the_order_they_arrive_even_when_an_earlier_one_is_slower(releases, monkeypatch):
    import time

    from fedrouter.serving.ray import ingress as ingress_module

    v1, v2 = releases
    spec = RaySpec(release=str(v1.path), engine="stub", engine_num_cpus=0, ingress_num_cpus=0)
    ingress = local(build(spec.model_dump()), "fedrouter-local")
    ingress.reconfigure.remote({"release": str(v2.path)}).result()
    real = ingress_module.local_release

    def slow_for_v1(path, digest, cache=None):
        if path == str(v1.path):
            time.sleep(0.5)  # reading v1 takes long: v2's publish, sent after it, arrives meanwhile
        return real(path, digest, cache)

    monkeypatch.setattr(ingress_module, "local_release", slow_for_v1)
    first = ingress.reconfigure.remote({"release": str(v1.path)})
    second = ingress.reconfigure.remote({"release": str(v2.path)})
    first.result(), second.result()
    assert ingress.state.remote().result()["release"] == "v2"  # the last published, not the slowest


def test_publish_through_reconfigure_swaps_and_a_refused_release_keeps_the_old_one(releases, tmp_path):
    v1, v2 = releases
    spec = RaySpec(release=str(v1.path), engine="stub", engine_num_cpus=0, ingress_num_cpus=0)
    ingress = local(build(spec.model_dump()), "fedrouter-local")
    assert ingress.state.remote().result()["release"] == "v1"

    ingress.reconfigure.remote({"release": str(v2.path)}).result()
    assert ingress.state.remote().result()["release"] == "v2"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    ingress.reconfigure.remote({"release": str(broken)}).result()  # does not raise: Serve would replace the replica
    state = ingress.state.remote().result()
    assert state["release"] == "v2" and str(broken) in state["refused"]

    ingress.reconfigure.remote({"release": str(v1.path)}).result()  # rollback = publishing the previous one
    assert ingress.state.remote().result()["release"] == "v1"


def test_models_per_replica_defaults_to_the_adapters_share(releases):
    v1, _ = releases  # 3 adapters
    assert RaySpec(release=str(v1.path), engine_replicas=2, router="serve").slots() == 2  # ceil(3 / 2)
    assert RaySpec(release=str(v1.path), engine_replicas=3, router="serve").slots() == 1
    assert RaySpec(release=str(v1.path), engine_replicas=3).slots() == 2  # ring: twice the share
    assert RaySpec(release=str(v1.path), engine_replicas=2).slots() == 3  # ... at most K
    assert RaySpec(release=str(v1.path), engine_replicas=2, models_per_replica=5).slots() == 5


def test_serve_switches_reach_every_replica_of_both_deployments(releases):
    env = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
    app = build(RaySpec(release=str(releases[0].path), engine="stub", serve_env=env).model_dump())
    ingress = app._bound_deployment
    engine = ingress.init_args[1]._bound_deployment
    for d in (ingress, engine):
        assert d.ray_actor_options["runtime_env"] == {"env_vars": env}
    plain = build(RaySpec(release=str(releases[0].path), engine="stub").model_dump())._bound_deployment
    assert "runtime_env" not in plain.ray_actor_options  # Ray's defaults: no runtime_env at all


def test_the_front_and_the_data_plane_reach_both_deployments(releases):
    """Defaults: the ingress replicas listen on the deploy's host:port themselves and the engines
    open doors; `front="proxy"` leaves HTTP to Serve's proxy, `data_plane="handle"` opens no door."""
    path = str(releases[0].path)
    ingress = build(RaySpec(release=path, engine="stub", port=9123).model_dump())._bound_deployment
    engine = ingress.init_args[1]._bound_deployment
    assert ingress.init_args[4:] == ("direct", {"host": "127.0.0.1", "port": 9123})
    assert engine.init_kwargs["door"] is True
    assert ingress._deployment_config.graceful_shutdown_timeout_s >= 60  # the front's drain fits in it
    spec = RaySpec(release=path, engine="stub", front="proxy", data_plane="handle")
    ingress = build(spec.model_dump())._bound_deployment
    assert ingress.init_args[4:] == ("handle", None)
    assert ingress.init_args[1]._bound_deployment.init_kwargs["door"] is False
    for bad in ({"front": "nginx"}, {"data_plane": "grpc"}, {"router": "serve"}):  # serve's router: handle only
        with pytest.raises(ValueError):
            build(RaySpec(release=path, engine="stub", **bad).model_dump())


def test_a_failed_stub_engine_fails_its_health_check():
    engine = local(serve.deployment(StubEngine).bind(models_per_replica=1), "health")
    engine.check_health.remote().result()
    engine.fail.remote().result()
    with pytest.raises(RuntimeError):
        engine.check_health.remote().result()


def test_the_cli_has_serve_ray_and_release_publish(releases):
    from fedrouter.cli import build_parser

    args = build_parser().parse_args(["serve", "--ray", "--release", str(releases[0].path), "--engine-replicas", "2"])
    assert args.ray and args.engine_replicas == 2
    args = build_parser().parse_args(["release", "publish", str(releases[1].path)])
    assert args.fn.__name__ == "cmd_publish" and args.ray_address == "auto"
    bad = build_parser().parse_args(["serve", "--ray", "--release", str(releases[0].path), "--watch"])
    with pytest.raises(ValueError, match="publishes releases"):  # refused before any Ray call
        bad.fn(bad)


async def test_an_evicted_adapter_leaves_vllm_after_its_last_request_unless_loaded_again(tmp_path):
    """What Serve's LRU eviction (`__del__` of the loaded model) does in an engine: the adapter
    stays while a request of this replica uses it, goes after, and stays if loaded again since."""
    engine = StubEngine(models_per_replica=1)
    folder = str(fake_adapter(tmp_path / "a"))

    async def drain(gen):
        return [item async for item in gen]

    body = json.dumps({"model": "a@1", "prompt": "stub-sleep 600"}).encode()
    running = asyncio.create_task(drain(engine.generate("/v1/completions", body, "a@1", folder)))
    while "a@1" not in engine.adapters:
        await asyncio.sleep(0.01)
    await engine._kept["a@1"].__del__()  # Serve evicts it while the request runs
    for _ in range(20):  # the background unload runs as far as it can
        await asyncio.sleep(0)
    assert "a@1" in engine.adapters
    running.cancel()  # the request ends (here: its client went away)
    with pytest.raises(asyncio.CancelledError):
        await running
    await asyncio.gather(*engine._unloading)
    assert "a@1" not in engine.adapters and engine.cancelled == 1

    evicted = await engine._load("a@1")
    await evicted.__del__()
    await engine._load("a@1")  # requested again before the unload ran
    await asyncio.gather(*engine._unloading)
    assert "a@1" in engine.adapters


def test_serve_ray_maps_its_flags_onto_the_application(releases, monkeypatch):
    import ray as ray_module

    import fedrouter.serving.ray.cluster as cluster
    from fedrouter.cli import build_parser

    deployed = {}
    monkeypatch.setattr(ray_module, "init", lambda address=None, **kw: deployed.setdefault("address", address))
    monkeypatch.setattr(cluster, "deploy", lambda spec, host, port: deployed.update(spec=spec, host=host, port=port))
    argv = ["serve", "--ray", "--ray-address", "auto", "--release", str(releases[0].path), "--port", "9123"]
    argv += ["--engine-replicas", "2", "--engine-gpus", "0.5", "--vllm-arg=--gpu-memory-utilization=0.4"]
    argv += ["--front", "proxy", "--data-plane", "handle"]
    args = build_parser().parse_args(argv)
    args.fn(args)  # returns at once with --ray-address (the cluster outlives the command)
    spec = deployed["spec"]
    assert deployed["address"] == "auto" and deployed["port"] == 9123
    assert (spec.engine, spec.engine_replicas, spec.engine_num_gpus) == ("vllm", 2, 0.5)
    assert (spec.front, spec.data_plane) == ("proxy", "handle")
    assert spec.engine_options == {"vllm_args": ["--gpu-memory-utilization=0.4"]}
    assert spec.release == str(releases[0].path.resolve())


def test_release_publish_exits_1_when_a_replica_refused(releases, monkeypatch, capsys):
    import ray as ray_module

    import fedrouter.serving.ray.cluster as cluster
    from fedrouter.cli import build_parser

    monkeypatch.setattr(ray_module, "init", lambda **kw: None)
    result = {"release": "v2", "path": "p", "seconds": 0.1, "replicas": {"a": "p"}, "refused": {"b": "why"}}
    monkeypatch.setattr(cluster, "publish", lambda release, timeout_s: result)
    args = build_parser().parse_args(["release", "publish", str(releases[1].path)])
    with pytest.raises(SystemExit) as e:
        args.fn(args)
    assert e.value.code == 1 and json.loads(capsys.readouterr().out)["refused"] == {"b": "why"}


def test_an_engine_counts_the_requests_it_answered_per_adapter(tmp_path):
    """benchmarks/ray_throughput.py reads home-replica hits from these counters."""

    async def go() -> dict:
        engine = StubEngine(models_per_replica=2)
        for model in ["a@1", "b@2", "a@1", None]:
            body = json.dumps({"model": model or "base", "prompt": "hi"}).encode()
            async for _ in engine.generate("/v1/completions", body, adapter=model, folder=str(tmp_path)):
                pass
        return await engine.served()

    assert asyncio.run(go()) == {"replica": "local", "counts": {"a@1": 2, "b@2": 1}, "cores": ""}


class _Ref:
    """What a Ray ObjectRef is to the engine: awaited for its value."""

    def __init__(self, value):
        self.value, self.awaited = value, 0

    def __await__(self):
        self.awaited += 1
        yield from asyncio.sleep(0).__await__()
        return self.value


async def test_an_engine_without_the_adapter_folder_fetches_its_bytes_and_checks_their_digest(tmp_path):
    """As on a node without the ingress's filesystem: the folder the ingress sent is not there, so
    the engine fetches the bytes that came with it into its own store (digest checked) and loads
    that copy; a folder it can see is used as it is; bytes that are not the digest's are refused."""
    from fedrouter.router.adapter_files import adapter_digest
    from fedrouter.serving.adapter_store import AdapterStore

    first, second = fake_adapter(tmp_path / "a", seed=1), fake_adapter(tmp_path / "b", seed=2)
    ingress = AdapterStore(tmp_path / "ingress-store")
    d1, d2 = adapter_digest(first), adapter_digest(second)
    seen_folder = ingress.put(d2, second)
    engine = StubEngine(models_per_replica=4, adapter_store=str(tmp_path / "engine-store"))

    def body(model):
        return json.dumps({"model": model, "prompt": "hi"}).encode()

    ref = _Ref({n: (first / n).read_bytes() for n in ("adapter_config.json", "adapter_model.safetensors")})
    elsewhere = str(tmp_path / "other-node" / d1)
    head, _ = await engine.complete("/v1/completions", body("a@1"), "a@1", elsewhere, [ref])
    assert head["status"] == 200 and ref.awaited == 1
    assert engine.fetched == [d1] and adapter_digest(tmp_path / "engine-store" / d1) == d1

    unused = _Ref(ingress.files(d2))
    head, _ = await engine.complete("/v1/completions", body("b@2"), "b@2", str(seen_folder), [unused])
    assert head["status"] == 200 and unused.awaited == 0 and engine.fetched == [d1]  # no copy needed

    wrong = _Ref(ingress.files(d2))  # bytes that are not the digest the folder's name says
    with pytest.raises(ValueError, match="changed after validation"):
        await engine.complete("/v1/completions", body("c@3"), "c@3", str(tmp_path / "other-node" / ("0" * 64)), [wrong])
    assert not (tmp_path / "engine-store" / ("0" * 64)).exists()


def test_a_node_reads_a_release_from_its_folder_its_own_shipped_copy_or_says_it_has_neither(releases, tmp_path):
    import io
    import shutil
    import tarfile

    from fedrouter.serving.ray.release_shelf import local_release, pack

    v1, v2 = releases
    assert local_release(str(v1.path), v1.digest, str(tmp_path / "c")).path == v1.path  # the folder is that release
    assert local_release(str(v1.path), "", str(tmp_path / "c")).path == v1.path  # never shipped: as it is
    copy = tmp_path / "c" / v2.digest  # a copy fetched earlier on this node
    copy.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(pack(v2.path))) as tar:
        tar.extractall(copy, filter="data")
    assert local_release(str(v1.path), v2.digest, str(tmp_path / "c")).path == copy.resolve()  # v1's folder is not v2
    shutil.rmtree(copy)
    with pytest.raises(FileNotFoundError, match=f"release {v2.digest[:12]} is not at .* and was not shipped"):
        local_release(str(tmp_path / "gone"), v2.digest, str(tmp_path / "c"))
