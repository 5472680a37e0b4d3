"""The content-addressed adapter store: the only folders vLLM is ever told to read adapters from.

vLLM keeps the `lora_path` a name was registered with and reads it again whenever its CPU cache
evicts the adapter. A release folder may later be deleted or rewritten; `<root>/<digest>/` cannot
change under a name: it is written once (assembled in a hidden sibling, its digest checked, then
renamed into place), made read-only, and named by the sha256 of its config and weights, so a name
`adapter@<digest>` always reads the weights that digest names. Folders are shared by every release
(and every gateway of this user) that holds the same adapter.

    <root>/<sha256>/adapter_config.json
    <root>/<sha256>/adapter_model.safetensors
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from fedrouter.router.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_digest
from fedrouter.router.cache import cache_root

_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)


def default_store_root() -> Path:
    """<cache>/adapters (router/cache.py: $FEDROUTER_CACHE or ~/.cache/fedrouter)."""
    return cache_root() / "adapters"


class AdapterStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_store_root()
        self._checked: set[str] = set()  # digests whose folder this process has verified

    def put(self, digest: str, source: Path) -> Path:
        """The store's folder for `digest`, copied from `source` if it is not there yet. Raises
        ValueError if the files copied do not have that digest (the source changed after it was
        validated). An existing folder is checked once per process; a damaged one is replaced."""
        return self._put(digest, lambda tmp, name: shutil.copyfile(source / name, tmp / name), str(source))

    def put_files(self, digest: str, files: dict[str, bytes]) -> Path:
        """As `put`, from the files' bytes (`files()` of another node's store): ValueError if they
        do not have that digest or lack one."""
        missing = [n for n in _FILES if n not in files]
        if missing:
            raise ValueError(f"adapter {digest[:16]}: files {missing} missing")
        return self._put(
            digest, lambda tmp, name: (tmp / name).write_bytes(files[name]), "the bytes received from another node"
        )

    def files(self, digest: str) -> dict[str, bytes]:
        """The bytes of a stored adapter's files (to send to a node that lacks it)."""
        return {name: (self.root / digest / name).read_bytes() for name in _FILES}

    def _put(self, digest: str, write, source: str) -> Path:
        dest = self.root / digest
        if digest in self._checked and dest.is_dir():
            return dest
        if dest.is_dir():
            if _digest_or_none(dest) == digest:
                self._checked.add(digest)
                return dest
            _remove(dest)  # damaged (only this user could have written it): write it again
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}.", dir=self.root))
        try:
            for name in _FILES:
                write(tmp, name)
            found = adapter_digest(tmp)
            if found != digest:
                raise ValueError(
                    f"adapter files in {source} changed after validation (digest {found[:16]}, expected {digest[:16]})"
                )
            for name in _FILES:
                os.chmod(tmp / name, 0o444)
            os.chmod(tmp, 0o555)
            try:
                os.rename(tmp, dest)
            except OSError:  # another process stored the same digest meanwhile: theirs is as good
                if _digest_or_none(dest) != digest:
                    raise
                _remove(tmp)
        except BaseException:
            _remove(tmp)
            raise
        self._checked.add(digest)
        return dest


def _digest_or_none(folder: Path) -> str | None:
    try:
        return adapter_digest(folder)
    except OSError:
        return None


def _remove(folder: Path) -> None:
    """Delete a store folder, read-only as it is."""
    if folder.is_dir():
        os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(folder, ignore_errors=True)
