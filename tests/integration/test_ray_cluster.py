"""The Serve application on a real local Ray cluster (one per module: ray.init(num_cpus=2),
fractional CPUs), with stub engines: affinity, publishing under load, a refused release, a killed
engine replica. HTTP with httpx, as a client would, to the port the ingress replicas share (RaySpec's
default front: Serve starts no proxy)."""

import os
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray.serve")

import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.exceptions import DeploymentUnavailableError  # noqa: E402

from fedrouter.router.build import build_release  # noqa: E402
from fedrouter.router.embed import HashEmbedder  # noqa: E402
from fedrouter.router.release import ReleaseError  # noqa: E402
from fedrouter.serving.ray import door  # noqa: E402
from fedrouter.serving.ray.app import APP, RaySpec  # noqa: E402
from fedrouter.serving.ray.cluster import deploy, publish  # noqa: E402
from tests.conftest import fake_adapter  # noqa: E402
from tests.tiny import TASK_EXAMPLES, write_examples  # noqa: E402

pytestmark = pytest.mark.integration
ADAPTERS = ("math", "geo", "sentiment", "poetry")


def make_release(folder, seed):
    poems = ["Write a short poem about the sea.", "Compose a haiku on autumn leaves."]
    examples = write_examples(folder.parent / f"ex-{folder.name}", {**TASK_EXAMPLES, "poetry": poems})
    adapters = {n: fake_adapter(folder.parent / f"a-{folder.name}" / n, seed=seed + i) for i, n in enumerate(ADAPTERS)}
    return build_release(folder, base_model="base", adapters=adapters, examples=examples, embedder=HashEmbedder(256))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    v1, v2 = make_release(root / "v1", 0), make_release(root / "v2", 10)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    spec = RaySpec(
        release=str(v1.path),
        engine="stub",
        engine_replicas=2,
        engine_num_cpus=0.25,
        ingress_replicas=2,
        ingress_num_cpus=0.25,
        # two stores, as on two nodes without a shared filesystem (test_an_engine_fetches_...)
        engine_options={"delay_s": 0.02, "adapter_store": str(root / "engine-store")},
        gateway={"adapter_store": str(root / "ingress-store")},
        release_cache=str(root / "node-releases"),  # where a replica without the folder unpacks a shipped release
        health_check_period_s=1.0,
    )
    deploy(spec, port=port, timeout_s=600)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        yield client, v1, v2
    finally:
        client.close()
        serve.shutdown()
        ray.shutdown()


def ask(client, model, text="What is the capital of Italy?"):
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return client.post("/v1/chat/completions", json=body)


def test_each_adapter_stays_on_one_engine_replica_and_the_base_model_spreads(cluster):
    client, _, _ = cluster
    placed: dict[str, Counter] = defaultdict(Counter)
    for _ in range(10):
        for model in (*ADAPTERS, "base"):
            r = ask(client, model)
            assert r.status_code == 200, r.text
            placed[model][r.json()["system_fingerprint"]] += 1
    print({m: dict(c) for m, c in placed.items()})
    for model in ADAPTERS:  # 4 adapters, 2 replicas holding 2 each: one home per adapter
        home = placed[model].most_common(1)[0][1]
        assert home / sum(placed[model].values()) >= 0.9, placed
    assert len(placed["base"]) == 2  # no model id: both replicas take base-model requests


def test_requests_go_through_the_engines_doors_which_refuse_anyone_without_the_secret(cluster):
    """The direct data plane (RaySpec's default): an ingress sends a generation to the engine
    replica's door over HTTP, not through a handle call; each running engine replica lists its door
    in the cluster's key-value store; a door answers nothing to a caller without the secret."""
    client, _, _ = cluster
    before = engines()
    for model in (*ADAPTERS, "base"):
        assert ask(client, model).status_code == 200
    after = engines()
    assert set(after) == set(before)
    assert sum(e["through_door"] - before[r]["through_door"] for r, e in after.items()) == len(ADAPTERS) + 1
    doors = door.listed()
    assert set(doors) == set(after)
    for url in doors.values():
        for path in ("/v1/completions", "/v1/models", "/v1/load_lora_adapter"):
            r = httpx.post(url + path, json={"model": "base", "prompt": "x"}, timeout=10)
            assert r.status_code == 401 and r.content == b"", (url, path)


def test_publish_under_load_fails_no_request_and_every_ingress_switches(cluster):
    client, v1, v2 = cluster
    statuses: Counter = Counter()
    releases: Counter = Counter()
    stop = threading.Event()

    def load(i):
        with httpx.Client(base_url=client.base_url, timeout=60) as c:
            while not stop.is_set():
                r = ask(c, "auto" if i % 2 else ADAPTERS[i % len(ADAPTERS)])
                statuses[r.status_code] += 1
                releases[r.headers.get("x-fedrouter-release")] += 1

    replicas = set(answering("Ingress", "state"))
    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        result = publish(str(v2.path), timeout_s=300)
    finally:
        time.sleep(1.0)  # a little load after the switch too
        stop.set()
        for t in threads:
            t.join()
    print(result, dict(statuses), dict(releases))
    assert set(statuses) == {200}, statuses
    assert set(releases) <= {"v1", "v2"} and releases["v2"] > 0
    assert not result["refused"] and set(result["replicas"].values()) == {str(v2.path)}
    assert set(result["replicas"]) == replicas  # a config update in place: no replica was replaced
    assert {ask(client, "auto").headers["x-fedrouter-release"] for _ in range(10)} == {"v2"}


def test_a_refused_release_leaves_the_old_one_serving_everywhere(cluster, tmp_path):
    client, v1, v2 = cluster
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ReleaseError):
        publish(str(broken))  # checked before anything is sent
    serving = publish(str(v2.path))["replicas"]
    result = publish(str(broken), check=False, timeout_s=300)  # sent: every replica refuses it
    assert set(result["refused"]) == set(serving)  # the same replicas: none was restarted
    assert set(result["replicas"].values()) == {str(v2.path)}
    assert serve.status().applications[APP].status == "RUNNING"
    assert {ask(client, "geo").headers["x-fedrouter-release"] for _ in range(10)} == {"v2"}
    rolled = publish(str(v1.path))  # rollback: publish the previous release
    assert set(rolled["replicas"].values()) == {str(v1.path)}
    assert {ask(client, "geo").headers["x-fedrouter-release"] for _ in range(10)} == {"v1"}


def test_a_client_that_goes_away_cancels_the_engine_call(cluster):
    client, _, _ = cluster

    def cancelled():
        handle = serve.get_deployment_handle("Engine", APP)
        return sum(dict(handle.cancellations.remote().result() for _ in range(12)).values())

    before = cancelled()
    with httpx.Client(base_url=client.base_url, timeout=httpx.Timeout(60, read=3)) as c:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            c.post("/v1/completions", json={"model": "base", "prompt": "stub-sleep 600"})
    deadline = time.monotonic() + 120
    while cancelled() == before:  # the gateway closes its request to the door, which cancels the engine's generation
        assert time.monotonic() < deadline
        time.sleep(0.5)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.05})
class Raiser:
    """A replica whose `reconfigure` raises on `{"ok": false}`."""

    def reconfigure(self, config):
        if not config["ok"]:
            raise ValueError("refused")

    def __call__(self):
        return os.getpid()


raiser = Raiser.bind()


def test_serve_replaces_a_replica_whose_reconfigure_raises(cluster):
    """Why the ingress's `reconfigure` never raises (serving/ray/ingress.py): Serve stops a replica
    whose `reconfigure` raised on a config update and starts new ones with that config (which
    fail too), then marks the deployment DEPLOY_FAILED."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    from fedrouter.serving.ray.cluster import deployed_config

    def config(ok):
        raiser_app = {
            "name": "raiser",
            "route_prefix": "/raiser",
            "import_path": "tests.integration.test_ray_cluster:raiser",
            "runtime_env": {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}},
            "deployments": [{"name": "Raiser", "user_config": {"ok": ok}}],
        }
        return ServeDeploySchema(applications=[deployed_config(), raiser_app])  # the fedrouter app stays

    client = serve_start()
    client.deploy_apps(config(True), _blocking=True)
    assert serve.get_app_handle("raiser").remote().result() > 0  # serving with a good config
    client.deploy_apps(config(False))
    deadline = time.monotonic() + 300
    while serve.status().applications["raiser"].status != "DEPLOY_FAILED":
        assert time.monotonic() < deadline, serve.status().applications["raiser"]
        time.sleep(1.0)
    assert "failed" in serve.status().applications["raiser"].deployments["Raiser"].message.lower()
    with pytest.raises(DeploymentUnavailableError):  # no calls taken, whatever replica still runs
        serve.get_app_handle("raiser").remote().result(timeout_s=10)
    serve.delete("raiser")


def answering(deployment, method):
    """What the replicas of `deployment` that answer now say to `method`, by replica id (Serve
    picks the replica of each call, so it is asked a dozen times)."""
    handle = serve.get_deployment_handle(deployment, APP)
    seen = {}
    for _ in range(12):
        try:
            me = getattr(handle, method).remote().result(timeout_s=10)
            seen[me["replica"]] = me
        except Exception:  # a replica being replaced
            pass
    return seen


def engines():
    return answering("Engine", "whoami")


def engine_pids():
    return {e["pid"] for e in engines().values()}


def test_an_engine_replica_killed_mid_request_fails_that_request_once_and_is_restarted(cluster):
    """Serve does not send a request again when the replica running it dies: the client gets the
    gateway's 503 and no other replica ever sees the request; Serve starts a replacement."""
    client, _, _ = cluster
    home = ask(client, "math").json()["system_fingerprint"]
    before = engines()
    assert len(before) == 2 and home in before
    answer = {}

    def slow_request():
        body = {"model": "math", "prompt": "stub-sleep 600"}
        answer["r"] = client.post("/v1/completions", json=body)

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 120
    while engines().get(home, {}).get("answered", 0) == before[home]["answered"]:  # until the home has it
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(before[home]["pid"], signal.SIGKILL)
    thread.join(timeout=300)
    r = answer["r"]
    assert r.status_code == 503 and r.json()["error"]["code"] == "backend_unavailable", r.text
    (other,) = set(before) - {home}
    while True:  # Serve notices the dead actor and starts a replacement
        now = engines()
        if len(now) == 2 and home not in now:
            break
        assert time.monotonic() < deadline + 300, now
        time.sleep(1.0)
    assert now[other]["answered"] == before[other]["answered"]  # the request was not sent to it again
    assert all(ask(client, m).status_code == 200 for m in (*ADAPTERS, "base"))


def test_a_failing_health_check_replaces_the_engine_replica(cluster):
    client, _, _ = cluster
    before = engine_pids()
    handle = serve.get_deployment_handle("Engine", APP)
    handle.fail.remote().result()  # one replica now reports itself unhealthy (as with a dead vLLM)
    deadline = time.monotonic() + 300
    while not (len(after := engine_pids()) == 2 and len(after - before) == 1):
        assert time.monotonic() < deadline
        time.sleep(1.0)
    assert all(ask(client, m).status_code == 200 for m in (*ADAPTERS, "base"))


def test_an_engine_fetches_an_adapter_it_cannot_see_from_the_object_store(cluster, tmp_path):
    """A release whose store folders are gone from the ingress's filesystem once published (as on
    another node): the engines fetch each adapter's bytes from Ray's object store into their own
    store, check the digest, and answer; the gateway's folder is never needed again."""
    client, v1, _ = cluster
    v3 = make_release(tmp_path / "v3", 20)
    assert publish(str(v3.path), timeout_s=300)["release"] == "v3"
    ingress_store = Path(v1.path).parents[0] / "ingress-store"
    for digest in v3.manifest.digests.values():  # the engines' node cannot see these now
        folder = ingress_store / digest
        os.chmod(folder, 0o700)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    for model in ADAPTERS:
        r = ask(client, model)
        assert r.status_code == 200 and r.headers["x-fedrouter-release"] == "v3", r.text
    engine_store = Path(v1.path).parents[0] / "engine-store"
    assert all((engine_store / d).is_dir() for d in v3.manifest.digests.values())
    publish(str(v1.path), timeout_s=300)  # leave the module's starting release serving


def test_an_ingress_replica_started_where_the_release_folder_is_not_reads_the_shipped_copy(cluster, tmp_path):
    """Releases need no shared filesystem: publish ships the release to the cluster; the folder is
    then removed (as on a node that never had it) and every ingress replica is killed. Serve's
    new replicas take the published release from the cluster's copy and serve it."""
    client, v1, _ = cluster
    v4 = make_release(tmp_path / "v4", 30)
    assert publish(str(v4.path), timeout_s=300)["release"] == "v4"
    for f in sorted(Path(v4.path).rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    Path(v4.path).rmdir()
    before = answering("Ingress", "state")
    assert len(before) == 2
    for s in before.values():
        os.kill(s["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 300
    while True:  # Serve starts replacements, which take the published release in `reconfigure`
        now = answering("Ingress", "state")
        if len(now) == 2 and not set(now) & set(before) and all(s["release"] == "v4" for s in now.values()):
            break
        assert time.monotonic() < deadline, now
        time.sleep(1.0)
    shelf_copy = Path(v1.path).parent / "node-releases" / v4.digest
    assert {s["folder"] for s in now.values()} == {str(shelf_copy)}
    assert {s["path"] for s in now.values()} == {str(v4.path)}  # named as it was published
    for model in ("auto", *ADAPTERS):
        r = ask(client, model)
        assert r.status_code == 200 and r.headers["x-fedrouter-release"] == "v4", r.text
    publish(str(v1.path), timeout_s=300)  # leave the module's starting release serving
