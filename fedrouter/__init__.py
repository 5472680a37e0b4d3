"""fedrouter: federated task-centric LoRA training, served behind one routed OpenAI endpoint.

The router is useful on its own (another gateway, a notebook):

    from fedrouter import load_release, Router
    release = load_release("runs/demo/releases/latest")
    router = Router.from_release(release)
    router.route("What is 14 plus 27?")   # Route(adapter='cluster2', score=0.61, ...)

Public names, imported on first use so that `import fedrouter` stays instant:
`load_release`, `Release`, `Router`, `Route`, `build_release`, `make_embedder`.

Subpackages: `fedrouter.router` (release contract, embedders, nearest-centroid routing),
`fedrouter.serving` (the gateway), `fedrouter.training` (FedRouter and baselines on Flower).
"""

from __future__ import annotations

import importlib
from pathlib import Path

# In a source checkout the subpackages live beside this folder (router/, serving/, training/ at
# the top of the repository, as the design lays them out); an installed wheel puts them inside it.
# Searching the checkout's root too makes `fedrouter.router` resolve to the checkout's own code,
# whatever other copy an environment has installed.
_root = Path(__file__).resolve().parent.parent
if (_root / "router" / "release.py").is_file() and (_root / "pyproject.toml").is_file():
    __path__.append(str(_root))  # noqa: F821  (a package's __path__)

__version__ = "0.1.0"

_PUBLIC = {
    "load_release": "fedrouter.router.release",
    "Release": "fedrouter.router.release",
    "Router": "fedrouter.router.router",
    "Route": "fedrouter.router.router",
    "build_release": "fedrouter.router.build",
    "make_embedder": "fedrouter.router.embed",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fedrouter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_PUBLIC))
