"""The release: the only thing that crosses from training to serving.

This module owns the folder layout, the manifest schema, the atomic write and the validation of
a release. Nothing else in fedrouter spells a release's file names (the adapter folder's two are
in adapter_files.py, which also checks an adapter's weights and computes its digest). A release
is identified by everything that decides an answer (`Release.digest`): the manifest records the
digests of every adapter, of the centroids, of the embedder's and the base model's files, and its
own, all checked at load; its `release_id` is only a label.

    <release>/manifest.json        the schema below (`Manifest`)
    <release>/centroids.npy        float32 [K, dim], L2-normalised, row i = cluster id i
    <release>/adapters/<name>/     PEFT: adapter_config.json + adapter_model.safetensors
    <releases>/latest              symlink to the newest complete release, replaced atomically
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fedrouter.router.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_digest, check_adapter_folder
from fedrouter.router.identity import base_model_digest, check_content, embedder_digest, file_digest, with_content
from fedrouter.router.json_types import type_problems

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CENTROIDS = "centroids.npy"
ADAPTERS_DIR = "adapters"
LATEST = "latest"


FALLBACKS = ("base", "nearest")
RESERVED_NAMES = ("auto",)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RELEASE_DIR = re.compile(r"^v(\d+)$")


class ReleaseError(ValueError):
    """A release that cannot be served. `problems` lists every defect found, one per line."""

    def __init__(self, where: Path | str, problems: list[str]):
        self.where = str(where)
        self.problems = problems
        super().__init__(f"invalid release {where}:\n  - " + "\n  - ".join(problems))


@dataclass
class BaseModelInfo:
    name: str  # the public name clients use for the base model
    path: str  # what vLLM and PEFT load: an HF folder or hub id
    digest: str = ""  # sha256 of the folder's files (config, tokenizer, weights); "" for a hub id


@dataclass
class EmbedderInfo:
    kind: str  # "sentence-transformers" | "base-llm" | "static" (router/static_embed.py) | "hash" (tests)
    name: str  # model name or folder; resolved by router.embed.load_embedder
    dim: int
    normalize: bool = True
    metric: str = "cosine"  # inner product on L2-normalised vectors
    digest: str = ""  # sha256 of the embedder's files (router/identity.py); "" if they were not at hand


@dataclass
class Cluster:
    id: int  # row of centroids.npy
    adapter: str  # adapter serving this cluster (several clusters may share one)
    path: str  # adapter folder, relative to the release
    size: int = 0  # training samples that formed the cluster


@dataclass
class LoraInfo:
    r: int  # largest rank among the adapters: vLLM's --max-lora-rank
    alpha: float
    targets: list[str]


@dataclass
class RoutingInfo:
    threshold: float = 0.0  # cosine below which the fallback applies
    fallback: str = "base"  # "base": send to the base model; "nearest": nearest cluster anyway


@dataclass
class Manifest:
    release_id: str
    base_model: BaseModelInfo
    embedder: EmbedderInfo
    clusters: list[Cluster]
    lora: LoraInfo
    routing: RoutingInfo = field(default_factory=RoutingInfo)
    training: dict[str, Any] = field(default_factory=dict)  # strategy, rounds, metrics
    # Optional: per client id, the clusters it trained and its samples in each ({cluster id: count});
    # ids and counts only. Serving routes a request that names its client among these ("local" mode).
    client_clusters: dict[str, dict[int, int]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format_version: int = FORMAT_VERSION
    # Identity by content. digests: adapter name -> sha256 of its config + weights (checked at
    # load); digest: sha256 of this manifest without the field itself. Written by write_release;
    # a manifest without them (older releases) gets them computed at load.
    digests: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    centroids_digest: str = ""  # sha256 of centroids.npy

    @property
    def adapters(self) -> dict[str, str]:
        """Adapter name -> folder relative to the release, in cluster order."""
        return {c.adapter: c.path for c in sorted(self.clusters, key=lambda c: c.id)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Raises TypeError naming the first field whose JSON type is wrong (see `type_problems`)."""
        problems = type_problems(cls, d, "manifest")
        if problems:
            raise TypeError("; ".join(problems[:5]))
        return cls(
            release_id=str(d["release_id"]),
            base_model=BaseModelInfo(**d["base_model"]),
            embedder=EmbedderInfo(**d["embedder"]),
            clusters=[Cluster(**c) for c in d["clusters"]],
            lora=LoraInfo(**d["lora"]),
            routing=RoutingInfo(**d.get("routing", {})),
            training=dict(d.get("training", {})),
            client_clusters={
                str(c): {int(k): int(v) for k, v in counts.items()}
                for c, counts in d.get("client_clusters", {}).items()
            },
            created=str(d.get("created", "")),
            format_version=int(d["format_version"]),
            digests=dict(d.get("digests", {})),
            digest=str(d.get("digest", "")),
            centroids_digest=str(d.get("centroids_digest", "")),
        )


@dataclass
class Release:
    """A validated release on disk."""

    path: Path
    manifest: Manifest
    centroids: np.ndarray  # float32 [K, dim]

    @property
    def id(self) -> str:
        """The human label (the folder name when written by training): NOT unique across runs."""
        return self.manifest.release_id

    @property
    def digest(self) -> str:
        """The identity of everything that decides an answer: the manifest (routing settings and
        client map included), every adapter's files, the centroids, the embedder's and the base
        model's files. Same digest, same answers."""
        return self.manifest.digest

    def adapter_dir(self, name: str) -> Path:
        return self.path / self.manifest.adapters[name]


def is_safe_name(name: str) -> bool:
    return bool(_SAFE_NAME.match(name)) and name not in RESERVED_NAMES


# ---------------------------------------------------------------------------------------------
# Reading and validation


def load_release(
    path: str | Path,
    *,
    max_lora_rank: int | None = None,
    expect_base: str | None = None,
    expect_embedder: str | None = None,
    expect_base_digest: str | None = None,
) -> Release:
    """Load and fully validate a release; raise ReleaseError naming every defect found.
    `expect_base_digest`: the base model's files the server runs (a release trained on other
    weights under the same name is refused)."""
    path = Path(path)
    try:
        if not path.is_dir():
            raise ReleaseError(path, [f"not a folder: {str(path)[:300]}"])
        path = path.resolve()  # follows `latest`
        manifest_file = path / MANIFEST
        if not manifest_file.is_file():
            raise ReleaseError(path, [f"missing {MANIFEST}"])
        text = manifest_file.read_bytes().decode("utf-8")
    except (OSError, ValueError) as e:  # a name too long, a loop of links, no permission, not UTF-8
        raise ReleaseError(str(path)[:300], [f"cannot read the release: {type(e).__name__}: {e}"[:500]]) from None
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise ReleaseError(path, [f"{MANIFEST} is not valid JSON: {e}"]) from None
    try:
        manifest = Manifest.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ReleaseError(path, [f"{MANIFEST} does not follow the schema: {type(e).__name__}: {e}"]) from None

    problems = _check_manifest(manifest, path, max_lora_rank)
    if not problems:
        problems += _check_digests(manifest, raw, path)
    if expect_base is not None and manifest.base_model.name != expect_base:
        problems.append(f"base model is {manifest.base_model.name!r}, the server runs {expect_base!r}")
    if expect_embedder is not None and manifest.embedder.name != expect_embedder:
        problems.append(f"embedder is {manifest.embedder.name!r}, the server embeds with {expect_embedder!r}")
    centroids, centroid_problems = _load_centroids(path, manifest)
    problems += centroid_problems
    if not problems:
        problems += check_content(manifest, path / CENTROIDS)
    b = manifest.base_model
    if expect_base_digest and b.digest and b.digest != expect_base_digest:
        problems.append(
            f"base model {b.name!r} has other files than the one the server runs "
            f"(digest {b.digest[:12]}, the server's {expect_base_digest[:12]})"
        )
    if problems:
        raise ReleaseError(path, problems)
    manifest.digest = manifest_digest(with_content(raw, manifest))
    return Release(path=path, manifest=manifest, centroids=centroids)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _check_digests(m: Manifest, raw: dict[str, Any], root: Path) -> list[str]:
    """Check the recorded digests against the files (or compute them for a manifest that has none)."""
    names = list(m.adapters)
    digests = _per_adapter(lambda name: adapter_digest((root / m.adapters[name]).resolve()), names)
    actual = dict(zip(names, digests))
    problems = [
        f"adapter {name!r}: its files changed after the release was written (digest mismatch)"
        for name, digest in actual.items()
        if m.digests.get(name, digest) != digest
    ]
    if m.digest and m.digest != manifest_digest(raw):
        problems.append(f"{MANIFEST} changed after the release was written (its digest does not match)")
    if not problems:
        m.digests = actual
    return problems


def manifest_digest(raw: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON, its `digest` field left out: the release's identity.

    Computed over the JSON as written, so a field that a later fedrouter adds with a default does
    not change the digest of a release written before it."""
    d = {k: v for k, v in raw.items() if k != "digest"}
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_manifest(m: Manifest, root: Path, max_lora_rank: int | None) -> list[str]:
    problems: list[str] = []
    if m.format_version != FORMAT_VERSION:
        problems.append(f"format_version {m.format_version} is not supported (this fedrouter reads {FORMAT_VERSION})")
    if not is_safe_name(m.release_id):
        problems.append(f"release_id {m.release_id!r} is not a safe name (letters, digits, _ . -)")
    if not m.base_model.name or not m.base_model.path:
        problems.append("base_model needs a name and a path")
    if m.embedder.dim <= 0:
        problems.append(f"embedder.dim must be positive, got {m.embedder.dim}")
    if m.embedder.metric != "cosine" or not m.embedder.normalize:
        problems.append("embedder must be normalised with metric 'cosine' (the index is inner product)")
    if not m.clusters:
        problems.append("no clusters")
    ids = sorted(c.id for c in m.clusters)
    if ids != list(range(len(m.clusters))):
        problems.append(f"cluster ids must be 0..K-1 without gaps, got {ids}")
    if m.routing.fallback not in FALLBACKS:
        problems.append(f"routing.fallback {m.routing.fallback!r} is not one of {FALLBACKS}")
    if not (-1.0 <= m.routing.threshold <= 1.0):
        problems.append(f"routing.threshold {m.routing.threshold} is outside [-1, 1]")
    for client, counts in m.client_clusters.items():
        bad = sorted(c for c in counts if not 0 <= c < len(m.clusters))
        if bad or not counts or any(n < 0 for n in counts.values()):
            problems.append(
                f"client_clusters[{client!r}] must map cluster ids 0..{len(m.clusters) - 1} to sample counts "
                f">= 0, got {dict(list(counts.items())[:8])}"
            )
    if m.lora.r <= 0:
        problems.append(f"lora.r must be positive, got {m.lora.r}")
    if max_lora_rank is not None and m.lora.r > max_lora_rank:
        problems.append(f"lora.r {m.lora.r} is above the serving limit {max_lora_rank}")

    seen_paths: dict[str, str] = {}
    for c in m.clusters:
        if not is_safe_name(c.adapter):
            problems.append(f"adapter name {c.adapter!r} is not a safe name (letters, digits, _ . -; not 'auto')")
            continue
        if c.adapter == m.base_model.name:
            problems.append(f"adapter name {c.adapter!r} is the base model's name")
        if seen_paths.setdefault(c.adapter, c.path) != c.path:
            problems.append(f"adapter {c.adapter!r} is given two paths: {seen_paths[c.adapter]!r} and {c.path!r}")
    for found in _per_adapter(lambda item: _check_adapter(root, *item, m.lora.r), list(seen_paths.items())):
        problems += found
    return problems


def _per_adapter(fn, items: list) -> list:
    """`fn` over a release's adapters, in order, on a few threads when there are many: hashing and
    file reads release the GIL, so a release of many adapters validates faster on several cores
    (64 adapters of 1.8 MB on 2 cores: about a third less time)."""
    if len(items) < 8:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def _check_adapter(root: Path, name: str, rel: str, max_r: int) -> list[str]:
    if Path(rel).is_absolute():
        return [f"adapter {name!r}: path {rel!r} must be relative to the release"]
    folder = (root / rel).resolve()
    if not folder.is_relative_to(root):
        return [f"adapter {name!r}: path {rel!r} leaves the release folder"]
    missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / f).is_file()]
    if missing:
        return [f"adapter {name!r}: missing {', '.join(missing)} in {rel}"]
    return [f"adapter {name!r}: {p}" for p in check_adapter_folder(folder, max_r)]


def _load_centroids(root: Path, m: Manifest) -> tuple[np.ndarray, list[str]]:
    file = root / CENTROIDS
    empty = np.zeros((0, max(m.embedder.dim, 0)), np.float32)
    if not file.is_file():
        return empty, [f"missing {CENTROIDS}"]
    try:
        c = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as e:
        return empty, [f"{CENTROIDS} cannot be read: {e}"]
    expected = (len(m.clusters), m.embedder.dim)
    if c.ndim != 2 or c.shape != expected:
        return empty, [f"{CENTROIDS} has shape {list(c.shape)}, expected [K={expected[0]}, dim={expected[1]}]"]
    if c.dtype != np.float32:
        return empty, [f"{CENTROIDS} has dtype {c.dtype}, expected float32"]
    if not np.isfinite(c).all():
        return empty, [f"{CENTROIDS} contains NaN or infinity"]
    norms = np.linalg.norm(c, axis=1)
    bad = [i for i, n in enumerate(norms) if not math.isclose(float(n), 1.0, abs_tol=1e-3)]
    if bad:
        return empty, [
            f"{CENTROIDS} rows {bad} are not L2-normalised (norms {[round(float(norms[i]), 4) for i in bad]})"
        ]
    return c, []


# ---------------------------------------------------------------------------------------------
# Writing


def next_release_dir(releases: str | Path) -> Path:
    """`releases/v<N+1>` after the highest existing `v<N>`."""
    releases = Path(releases)
    taken = [int(m.group(1)) for p in releases.glob("v*") if (m := _RELEASE_DIR.match(p.name))]
    return releases / f"v{max(taken, default=0) + 1}"


def write_release(
    out: str | Path,
    manifest: Manifest,
    centroids: np.ndarray,
    adapters: dict[str, str | Path],
    *,
    update_latest: bool = True,
) -> Release:
    """Write a release to `out` atomically and return it validated.

    `adapters` maps each adapter name of the manifest to a PEFT folder to copy. The release is
    assembled in a hidden sibling folder and renamed into place, so a reader never sees half of
    one; then `latest` beside it is pointed at it (also atomically).
    """
    out = Path(out).absolute()
    if out.exists():
        raise FileExistsError(f"release folder already exists: {out}")
    missing = set(manifest.adapters) - set(adapters)
    if missing:
        raise ValueError(f"no adapter folder given for {sorted(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, rel in manifest.adapters.items():
            dest = tmp / rel
            dest.mkdir(parents=True)
            for fname in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                shutil.copyfile(Path(adapters[name]) / fname, dest / fname)
        np.save(tmp / CENTROIDS, np.ascontiguousarray(centroids, dtype=np.float32))
        raw = manifest.to_dict()
        raw["digests"] = {n: adapter_digest(tmp / rel) for n, rel in manifest.adapters.items()}
        raw["centroids_digest"] = file_digest(tmp / CENTROIDS)
        e, b = manifest.embedder, manifest.base_model
        raw["embedder"]["digest"] = e.digest or embedder_digest(e.kind, e.name, e.dim)
        raw["base_model"]["digest"] = b.digest or base_model_digest(b.path)
        raw["digest"] = manifest_digest(raw)
        (tmp / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
        load_release(tmp)  # never publish something that would not load
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_latest:
        point_latest(out)
    return load_release(out)


def point_latest(release_dir: Path) -> None:
    """Atomically make `<parent>/latest` a relative symlink to `release_dir`."""
    link = release_dir.parent / LATEST
    tmp = release_dir.parent / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(release_dir.name)
    os.replace(tmp, link)
