"""Where fedrouter keeps what it derives on this machine: the prepared base model, embedder exports
and static tables, the serving side's adapter store. One place defines it: $FEDROUTER_CACHE, else
~/.cache/fedrouter."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("FEDROUTER_CACHE", Path.home() / ".cache" / "fedrouter"))
