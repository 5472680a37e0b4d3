"""Content digests of what decides an answer besides the adapters: the centroids, the embedder's
files and the base model's files. A release records them (router/release.py) so that its identity
changes whenever any of them does, and checks them at load where the files are on this machine.

Digests are sha256 over the files' relative paths and bytes, in sorted order; folders are hashed
once per process while their files' sizes and modification times stay the same (the base model
is hundreds of MB, and every reload validates).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # release.py imports this module
    from fedrouter.router.release import Manifest

_memo: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def folder_digest(folder: Path, recursive: bool = True) -> str:
    """sha256 over every file under `folder` (or directly in it), hidden files and folders left
    out (caches, locks)."""
    folder = Path(folder).resolve()
    files = sorted(
        p
        for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    stats = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(folder), recursive, stats)
    if key not in _memo:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(folder)).encode() + b"\0" + file_digest(p).encode())
        _memo[key] = h.hexdigest()
    return _memo[key]


def base_model_digest(path: str) -> str:
    """The base model's config, tokenizer and weights (the folder's own files, which is what vLLM
    and transformers read; subfolders such as a checkpoint's `original/` are left out), when `path`
    is a folder here; "" for a hub id or a folder on another machine (nothing to read)."""
    return folder_digest(Path(path), recursive=False) if os.path.isdir(path) else ""


def embedder_digest(kind: str, name: str, dim: int) -> str:
    """What the embedder computes with: its model files (the static table for `static`), or for the
    file-less hashing embedder its name and size; "" when its files are not on this machine."""
    if kind == "hash":
        return hashlib.sha256(f"hash:{name}:{dim}".encode()).hexdigest()
    folder = _embedder_folder(kind, name)
    return folder_digest(folder) if folder is not None and folder.is_dir() else ""


def _embedder_folder(kind: str, name: str) -> Path | None:
    if os.path.isdir(name):
        return Path(name)
    try:
        if kind == "sentence-transformers":
            from fedrouter.router.embed import resolve_model_folder

            return Path(resolve_model_folder(name))
        if kind == "static":
            from fedrouter.router.static_embed import static_cache_dir

            return static_cache_dir(name)
    except (ImportError, FileNotFoundError):
        return None
    return None


def check_content(m: Manifest, centroids: Path) -> list[str]:
    """The centroids, the embedder's and the base model's files against the digests the manifest
    records (where the files are on this machine); those it does not record (a release written
    before they were) are computed here, so that the identity covers them all the same."""
    found = {
        "centroids": file_digest(centroids),
        "embedder": embedder_digest(m.embedder.kind, m.embedder.name, m.embedder.dim),
        "base": base_model_digest(m.base_model.path),
    }
    problems = []
    if m.centroids_digest and m.centroids_digest != found["centroids"]:
        problems.append(f"{centroids.name} changed after the release was written (its digest does not match)")
    if m.embedder.digest and found["embedder"] and m.embedder.digest != found["embedder"]:
        problems.append(
            f"embedder {m.embedder.name!r}: its files here are not the ones the release was made with "
            f"(digest {found['embedder'][:12]}, recorded {m.embedder.digest[:12]})"
        )
    if m.base_model.digest and found["base"] and m.base_model.digest != found["base"]:
        problems.append(
            f"base model {m.base_model.path!r}: its files here are not the ones the release was made with "
            f"(digest {found['base'][:12]}, recorded {m.base_model.digest[:12]})"
        )
    if not problems:
        m.centroids_digest = m.centroids_digest or found["centroids"]
        m.embedder.digest = m.embedder.digest or found["embedder"]
        m.base_model.digest = m.base_model.digest or found["base"]
    return problems


def with_content(raw: dict[str, Any], m: Manifest) -> dict[str, Any]:
    """The manifest as written, with every content digest set (as recorded, or computed at load)."""
    return {
        **raw,
        "digests": m.digests,
        "centroids_digest": m.centroids_digest,
        "embedder": {**raw["embedder"], "digest": m.embedder.digest},
        "base_model": {**raw["base_model"], "digest": m.base_model.digest},
    }
