"""Releases shipped through the Ray cluster, so that no node needs the folder a release was
deployed or published from (no shared filesystem).

`ship(path)` packs a validated release folder (manifest, centroids, adapters) and hands it to the
shelf: one detached actor per cluster (name SHELF in namespace NAMESPACE) that puts it in Ray's
object store, owns that copy (it outlives the `fedrouter release publish` process that shipped
it) and keeps the last KEEP releases shipped. The digest (`Release.digest`, the manifest's
identity of everything that decides an answer) names it.

`local_release(path, digest)` is what every process that reads a release calls (the
application's builder, each ingress replica, each vLLM engine replica): the release, validated,
from `path` itself when that folder is on this node and is that release, else from the shelf's copy, fetched once per node into
`<cache>/releases/<digest>/` (unpacked beside it and renamed into place, so a half-written copy
is never read) and checked against the digest again.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import ray

from fedrouter.router.cache import cache_root
from fedrouter.router.release import Release, ReleaseError, load_release

SHELF = "fedrouter-releases"
NAMESPACE = "fedrouter"
KEEP = 16  # releases the shelf holds (a rollback further back ships its release again)


@ray.remote(num_cpus=0)
class Shelf:
    def __init__(self) -> None:
        self.refs: OrderedDict[str, Any] = OrderedDict()  # digest -> ref to the packed folder (owned here)

    def has(self, digest: str) -> bool:
        return digest in self.refs

    def put(self, digest: str, packed: bytes) -> None:
        self.refs[digest] = ray.put(packed)
        self.refs.move_to_end(digest)
        while len(self.refs) > KEEP:
            self.refs.popitem(last=False)

    def get(self, digest: str) -> list[Any]:
        """[ref] (a list, so that the caller fetches the bytes on its own node), or [] if not here."""
        return [self.refs[digest]] if digest in self.refs else []


def _shelf() -> Any:
    return Shelf.options(name=SHELF, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()


def pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:  # a linked adapter travels as files
        tar.add(folder, arcname=".")
    return buf.getvalue()


def ship(path: str) -> str:
    """Validate the release at `path` (on this node), put it on the cluster's shelf unless it is
    there already, and return its digest. Call after `ray.init`."""
    release = load_release(path)
    shelf = _shelf()
    if not ray.get(shelf.has.remote(release.digest)):
        ray.get(shelf.put.remote(release.digest, pack(release.path)))
    return release.digest


def _release_in(folder: Path, digest: str) -> Release | None:
    """The release in `folder` (fully validated) if it is release `digest`, else None."""
    try:
        release = load_release(folder)
    except ReleaseError:
        return None
    return release if release.digest == digest else None


def local_release(path: str, digest: str | None, cache: str | None = None) -> Release:
    """Release `digest`, validated, read from its folder on this node (see the module's docstring).
    No digest (a release that was never shipped): the release at `path`."""
    if not digest:
        return load_release(path)
    target = Path(cache) if cache else cache_root() / "releases"
    folder = target / digest
    here = _release_in(Path(path), digest) or _release_in(folder, digest)
    if here:
        return here
    refs = []
    if ray.is_initialized():  # else: no cluster (local testing mode), nothing shipped
        try:
            refs = ray.get(ray.get_actor(SHELF, namespace=NAMESPACE).get.remote(digest))
        except ValueError:  # no shelf on this cluster
            pass
    if not refs:
        raise FileNotFoundError(
            f"release {digest[:12]} is not at {path} on this node and was not shipped to the cluster "
            "(`fedrouter release publish` ships it)"
        )
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target))
    try:
        with tarfile.open(fileobj=io.BytesIO(ray.get(refs[0])), mode="r") as tar:
            tar.extractall(staging, filter="data")
        try:
            os.rename(staging, folder)
        except OSError:  # another replica on this node put it there first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # checked once, in place: the copy's files against its manifest's digests (a reader never uses
    # this folder unchecked either, so a bad copy is removed rather than served)
    release = _release_in(folder, digest)
    if release is None:
        shutil.rmtree(folder, ignore_errors=True)
        raise ValueError(f"the shipped copy of release {digest[:12]} is not that release")
    return release
