"""The package root's public API: what README shows a user who routes inside their own server."""

from __future__ import annotations

import subprocess
import sys

import fedrouter
from tests.tiny import TASK_EXAMPLES, write_examples


def test_route_with_the_public_api(tmp_path, fake_adapters):
    from fedrouter import Router, build_release, load_release, make_embedder

    build_release(
        tmp_path / "v1",
        base_model="base",
        adapters=fake_adapters,
        examples=write_examples(tmp_path / "ex"),
        embedder=make_embedder("hash", "hash-256"),
    )
    router = Router.from_release(load_release(tmp_path / "v1"))  # the embedder the manifest records
    for task, prompts in TASK_EXAMPLES.items():
        assert {r.adapter for r in router.route_batch(prompts)} == {task}


def test_public_names_are_listed_and_unknown_names_fail():
    assert {"load_release", "Router", "build_release"} <= set(fedrouter.__all__)
    try:
        fedrouter.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_importing_the_router_loads_no_heavy_framework():
    code = (
        "import sys; from fedrouter import Router, load_release, build_release; "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'flwr', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
