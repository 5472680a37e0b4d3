"""Start the serving stack as subprocesses, wait until it is healthy, drive traffic, stop it.

The one launcher used by `fedrouter demo`, the benchmarks and the integration tests: the gateway is
`python -m fedrouter.cli serve …` (exactly what a user runs) in its own process group; with no
`--backend` it supervises its own vLLM, which it stops when it gets SIGINT. Standalone vLLM servers
(replicas for `--backend`) are started with the gateway's own supervisor. `Traffic` is a set of
client threads sending chat completions back to back and recording every answer.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from fedrouter.router.release import load_release
from fedrouter.serving.supervisor import VLLMSupervisor, wait_healthy

SERVE = [sys.executable, "-m", "fedrouter.cli", "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Launched:
    proc: subprocess.Popen
    url: str  # the gateway, http://127.0.0.1:PORT
    vllm_url: str | None  # the supervised vLLM, or the first --backend
    start_s: float  # from spawn to a healthy /health (vLLM's start included when supervised)
    log: Path
    vllm_key: str | None = None  # the API key vLLM requires (FEDROUTER_VLLM_API_KEY), when known


def start_gateway(
    args: Sequence[str], *, log: Path, port: int | None = None, env: dict | None = None, timeout_s: float = 900
) -> Launched:
    """`fedrouter serve --port PORT *args` in its own process group, returned once healthy."""
    port = port or free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*SERVE, "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    args = list(args)
    vllm = None
    if "--vllm-port" in args:
        vllm = f"http://127.0.0.1:{args[args.index('--vllm-port') + 1]}"
    elif "--backend" in args:
        vllm = args[args.index("--backend") + 1]
    try:
        wait_healthy(url, proc, timeout_s, log)
    except BaseException:
        stop(proc)
        raise
    key = {**os.environ, **(env or {})}.get("FEDROUTER_VLLM_API_KEY")
    return Launched(proc, url, vllm, time.monotonic() - started, log, key)


def stop(proc: subprocess.Popen | Launched, grace_s: float = 60.0) -> None:
    """SIGINT the process group (the gateway stops its vLLM first), SIGKILL it after `grace_s`."""
    proc = proc.proc if isinstance(proc, Launched) else proc
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM to this process raises SystemExit, so `finally` blocks stop what
    it launched: the stack runs in its own process group, which would otherwise outlive a benchmark
    or test killed with `kill`, `timeout` or a CI limit. Only in the main thread, and only where
    SIGTERM still has its default action (an outer block, or the program, already decided)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def gateway(
    release: str | Path,
    log_dir: Path,
    *,
    backends: Sequence[str] = (),
    extra: Sequence[str] = (),
    env: dict | None = None,
    timeout_s: float = 900,
) -> Iterator[Launched]:
    """A gateway for `release`: supervising its own vLLM, or attached to `backends`; stopped on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    args = ["--release", str(release)]
    if backends:
        args += [a for b in backends for a in ("--backend", b)]
    else:
        # A TCP port and a known key, so that a benchmark can call vLLM directly (`fedrouter serve`
        # alone gives vLLM a private Unix socket and a random key instead).
        args += ["--vllm-port", str(free_port()), "--vllm-log", str(log_dir / "vllm.log")]
        env = {"FEDROUTER_VLLM_API_KEY": secrets.token_urlsafe(24), **(env or {})}
    with _sigterm_unwinds():
        launched = start_gateway([*args, *extra], log=log_dir / "gateway.log", env=env, timeout_s=timeout_s)
        try:
            yield launched
        finally:
            stop(launched)


@contextmanager
def vllm_servers(
    release: str | Path, log_dir: Path, n: int = 1, *, extra_args: Sequence[str] = (), env: dict | None = None
) -> Iterator[tuple[list[str], str]]:
    """`n` standalone vLLM servers serving `release` (for `--backend`), started together: (their URLs,
    the API key they require; give it to the gateway as FEDROUTER_VLLM_API_KEY). `env` is applied to
    each start, e.g. {"VLLM_CPU_OMP_THREADS_BIND": "0"}; a list gives one per server."""
    rel = load_release(release)
    envs = env if isinstance(env, list) else [env or {}] * n
    api_key = secrets.token_urlsafe(24)
    log_dir.mkdir(parents=True, exist_ok=True)
    servers = [
        VLLMSupervisor(free_port(), list(extra_args), 2, log_dir / f"vllm{i}.log", api_key, env=envs[i])
        for i in range(n)
    ]
    with _sigterm_unwinds():
        try:
            for s in servers:
                s.start(rel)
            for s in servers:
                s.wait_healthy(900)
            yield [s.url for s in servers], api_key
        finally:
            for s in servers:
                s.close()


class Traffic:
    """`clients` threads sending chat completions back to back until stopped; every answer recorded as
    (sent, done, status, x-fedrouter-release, x-fedrouter-adapter, body head)."""

    def __init__(
        self, url: str, prompts: Sequence[str], clients: int = 8, model: str = "auto", max_tokens: int = 4
    ) -> None:
        self.url, self.prompts, self.model, self.max_tokens = url, list(prompts), model, max_tokens
        self.results: list[tuple] = []
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(timeout=300) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                body = {
                    "model": self.model,
                    "messages": [{"role": "user", "content": rng.choice(self.prompts)}],
                    "max_tokens": self.max_tokens,
                }
                try:
                    r = client.post(f"{self.url}/v1/chat/completions", json=body)
                    h = r.headers
                    row = (sent, time.monotonic(), r.status_code, h.get("x-fedrouter-release"), h.get("x-fedrouter-adapter"), r.text[:200])  # fmt: skip
                except httpx.HTTPError as e:
                    row = (sent, time.monotonic(), 0, None, None, repr(e))
                with self._lock:
                    self.results.append(row)

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 300) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout_s)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def failures(self) -> list[tuple]:
        return [r for r in self.results if r[2] != 200]
