"""Deploying the application to a Ray cluster, and publishing a release to it.

Both go through Serve's controller as `serve run CONFIG` does (`serve_start` + `deploy_apps`, the
controller client that `ray.serve.scripts` uses; Ray is pinned to flwr's 2.55.1), so no
dashboard is needed. Call after `ray.init(address=...)` (any node of the cluster, or a local one).

A publish is a config update: the deployed config with the ingress's `user_config` changed.
Import path and args are unchanged, so Serve applies it in place and calls `reconfigure` on
every ingress replica (serving/ray/ingress.py). The release is validated here first, so a bad
release never reaches the cluster, and shipped to the cluster's shelf (serving/ray/release_shelf.py),
so a node without the folder reads the shipped copy; a replica that still refuses it keeps the
old release, and `publish` says so. Rolling back is publishing the previous one.
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

from fedrouter.router.release import load_release
from fedrouter.serving.ray.app import APP, RaySpec
from fedrouter.serving.ray.release_shelf import local_release, ship

IMPORT_PATH = "fedrouter.serving.ray.app:build"


def deploy(spec: RaySpec, host: str = "127.0.0.1", port: int = 8000, timeout_s: float = 900.0) -> None:
    """Deploy (or update in place) the application, clients connecting to host:port; returns once
    it is RUNNING. With front "ingress" the ingress replicas listen there and Serve starts no proxy
    (Serve keeps the HTTP options of its first start on a cluster)."""
    # no node needs the release folder: the shelf ships it
    spec = spec.model_copy(update={"release_digest": ship(spec.release), "host": host, "port": port})
    http = {"host": host, "port": port} if spec.front == "proxy" else {"location": "NoServer"}
    client = serve_start(http_options=http)
    config = {
        "applications": [
            {
                "name": APP,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": spec.model_dump(),
                # the ingress's user_config as a publish sets it, from the start: Serve applies a
                # publish as a config update in place (the first one too: an override that appears
                # only with the first publish makes Serve replace every ingress replica)
                "deployments": [
                    {"name": "Ingress", "user_config": {"release": spec.release, "digest": spec.release_digest}}
                ],
            }
        ]
    }
    client.deploy_apps(ServeDeploySchema(**config))
    wait_running(timeout_s)


def deployed_config() -> dict[str, Any]:
    details = serve_start().get_serve_details()
    app = details.get("applications", {}).get(APP)
    if not app or not app.get("deployed_app_config"):
        raise ValueError(f"no fedrouter application is deployed on this Ray cluster (app {APP!r})")
    return app["deployed_app_config"]


def published() -> str:
    """The release path the application serves (the last one published, or the starting one)."""
    config = deployed_config()
    for d in config.get("deployments", []):
        if d.get("name") == "Ingress" and (d.get("user_config") or {}).get("release"):
            return d["user_config"]["release"]
    return config["args"]["release"]


def publish(release: str, timeout_s: float = 600.0, check: bool = True) -> dict[str, Any]:
    """Publish `release` to every ingress replica; returns what they serve after it.

    Raises ReleaseError (nothing sent) when the release is invalid or has another base model.
    `check=False` sends it unchecked (tests of the replicas' own refusal)."""
    config = deployed_config()
    if check:
        args = config["args"]  # the starting release: from the shelf where this node lacks its folder
        start = local_release(args["release"], args.get("release_digest"), args.get("release_cache"))
        rel = load_release(release, expect_base=start.manifest.base_model.name)  # raises before any change
        release_id, path, digest = rel.id, str(rel.path), ship(str(rel.path))
    else:
        release_id, path, digest = "?", str(release), ""
    others = [d for d in config.get("deployments", []) if d.get("name") != "Ingress"]
    ingress = next((d for d in config.get("deployments", []) if d.get("name") == "Ingress"), {"name": "Ingress"})
    config["deployments"] = [*others, {**ingress, "user_config": {"release": path, "digest": digest}}]
    started = time.monotonic()
    serve_start().deploy_apps(ServeDeploySchema(applications=[config]))
    states = wait_published(path, timeout_s)
    return {
        "release": release_id,
        "path": path,
        "seconds": round(time.monotonic() - started, 2),
        "replicas": {r: s["path"] for r, s in states.items()},
        "refused": {r: s["refused"][path] for r, s in states.items() if path in s["refused"]},
    }


def wait_published(path: str, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Until every running ingress replica serves `path` or has refused it: their states.
    Serve picks the replica a handle call goes to, so replicas are asked until all were seen."""
    handle = serve.get_app_handle(APP)
    deadline = time.monotonic() + timeout_s
    seen: dict[str, dict[str, Any]] = {}
    while True:
        status = serve.status().applications[APP]
        running = status.deployments["Ingress"].replica_states.get("RUNNING", 0)
        s = handle.state.remote().result()
        seen[s["replica"]] = s
        done = {r for r, x in seen.items() if x["path"] == path or path in x["refused"]}
        if running and len(done) >= running and str(status.status).endswith("RUNNING"):
            return {r: seen[r] for r in done}
        if time.monotonic() > deadline:
            raise RuntimeError(f"release {path} not taken by every ingress replica after {timeout_s:.0f} s: {seen}")
        time.sleep(0.2)


def wait_running(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(APP)
        state = str(status.status) if status else "NOT_STARTED"
        if state.endswith("RUNNING"):
            return
        if state.endswith("DEPLOY_FAILED") or time.monotonic() > deadline:
            message = status.message if status else ""
            raise RuntimeError(f"the fedrouter application is {state}: {message}"[:2000])
        time.sleep(1.0)
