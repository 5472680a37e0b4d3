"""Attach mode's start check: can anyone but the gateway use the attached vLLM around it?

vLLM's `--api-key` guards only paths under /v1, /v2, /inference and /cohere. With runtime LoRA
updating on (which attach mode needs), vLLM 0.32 also serves `POST /adapters` (load any folder
under any name) and `DELETE /adapters/{name}`, and always /invocations (generation), /tokenize and
/metrics, none behind the key. Whoever reaches those can unload `math@<digest>` and load other
weights under that name: the gateway checks names only and would serve them.

So at start the gateway asks each attached server, without the key, what a stranger would get:
an answer other than 401/403/404/405 (or no connection) means the route is open. A `unix:PATH`
server is closed to others when its socket or its folder grants nothing to group and others.
Open routes stop the start, unless `allow_open_backend` is set (then a loud warning). The operator
closes them with a proxy or firewall in front of vLLM that lets only the gateway through (or a
Unix socket in a private folder): see README, Security.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import httpx

from fedrouter.serving.backends import Backend
from fedrouter.serving.supervisor import unix_socket

log = logging.getLogger("fedrouter.serving")
# What a stranger would send: an invalid body, so that an open route answers (400/422) and does nothing.
PROBES = (
    ("POST", "/adapters", {}),
    ("POST", "/invocations", {}),
    ("POST", "/tokenize", {}),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),  # answers without a key when vLLM was started without --api-key
)
CLOSED = (401, 403, 404, 405)


class OpenBackend(RuntimeError):
    """An attached vLLM serves routes that let others around the gateway."""


def private_socket(path: str) -> bool:
    """Only this user can connect: the socket or its folder is ours and grants nothing to others."""
    for p in (Path(path), Path(path).parent):
        try:
            st = os.stat(p)
        except OSError:
            continue
        if st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return True
    return False


async def open_routes(backend: Backend) -> list[str]:
    """The routes of `backend` that answer a request without the API key."""
    uds = unix_socket(backend.url)
    if uds is not None:
        return [] if private_socket(uds) else [f"the socket {uds} (other users may connect)"]
    found = []
    async with httpx.AsyncClient(base_url=backend.url, timeout=10.0) as client:  # no key: a stranger
        for method, path, body in PROBES:
            try:
                r = await client.request(method, path, json=body)
            except httpx.HTTPError:
                continue  # not reachable from here: closed as far as this host can tell
            if r.status_code not in CLOSED:
                found.append(f"{method} {path} ({r.status_code})")
    return found


async def check_attached(backends: list[Backend], allow_open: bool) -> None:
    """Refuse to start (OpenBackend) while an attached vLLM answers strangers; warn instead if allowed."""
    problems = []
    for b in backends:
        routes = await open_routes(b)
        if routes:
            problems.append(f"{b.url}: {', '.join(routes)}")
    if not problems:
        return
    message = (
        "attached vLLM servers answer requests that do not come from this gateway, around its routing "
        "and checks (anyone who reaches them can replace an adapter's weights under its name): "
        + "; ".join(problems)
        + ". Put them behind a proxy or firewall that lets only the gateway reach them, or on a Unix "
        "socket in a folder only the gateway's user can enter (README: Security)"
    )
    if not allow_open:
        raise OpenBackend(message + "; or set FEDROUTER_ALLOW_OPEN_BACKEND=1 to start anyway.")
    for _ in range(3):  # loud: it should not scroll by unnoticed
        log.warning("SECURITY: %s (allowed by FEDROUTER_ALLOW_OPEN_BACKEND)", message)
