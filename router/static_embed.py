"""A static embedder distilled from a sentence-transformers model: a table of one vector per
vocabulary token, so that embedding a prompt is a tokenizer call and a weighted mean (~0.1 ms)
instead of a transformer forward pass (~2-3 ms for MiniLM int8 on one core).

Distillation follows model2vec's method (Tulkens & van Dongen, 2024; written here, since the
`model2vec` package pins an older transformers than vLLM's): every token of the source model's
vocabulary is passed through the model alone (`[CLS] token [SEP]`, mean-pooled, normalised), the
table is centred and reduced with PCA (removing the direction all tokens share), and each row is
weighted by Zipf's law on its vocabulary rank (SIF: frequent tokens such as "the" weigh little;
WordPiece vocabularies are ordered by frequency after their special and single-character entries).

A static embedder is another vector space than its source model: a release records it as
`kind="static"` and training embeds with it, so prompts and centroids always meet in one space.
The table is made once, offline, from the packaged weights (`fedrouter models prepare --static`, or
on first use) and cached beside the ONNX export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedrouter.router.release import EmbedderInfo
from fedrouter.router.vectors import l2_normalize

log = logging.getLogger("fedrouter.router")
_META = "static.json"
_VECTORS = "vectors.npy"
DIM = 256  # PCA components kept (model2vec's default)
SIF = 1e-4  # SIF coefficient (model2vec's default)
MAX_TOKENS = 512  # a prompt's tokens averaged at most


def static_cache_dir(name: str) -> Path:
    from fedrouter.router.onnx_embed import embedder_cache_dir

    return embedder_cache_dir(name, "static")


def static_ready(name: str, out: Path | None = None) -> bool:
    """True if a table of `name` exists and was made from the weights now installed."""
    from fedrouter.router.onnx_embed import derived_ready

    return derived_ready(name, Path(out) if out else static_cache_dir(name), _META, [_VECTORS])


def distill_static(name: str, out: Path | None = None, *, force: bool = False, batch: int = 1024) -> Path:
    """Make the token table of sentence-transformers model `name` into `out` (default
    `static_cache_dir(name)`), written atomically; returns the folder."""
    import torch
    from transformers import AutoModel

    from fedrouter.router.embed import resolve_model_folder
    from fedrouter.router.onnx_embed import source_stamp

    folder = Path(resolve_model_folder(name))
    out = Path(out) if out else static_cache_dir(name)
    if not force and static_ready(name, out):
        return out
    started = time.monotonic()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = tok.get_vocab()  # token -> id
    size = max(vocab.values()) + 1
    cls_id, sep_id = vocab.get("[CLS]"), vocab.get("[SEP]")
    if cls_id is None or sep_id is None:
        raise ValueError(
            f"static distillation supports WordPiece ([CLS]/[SEP]) tokenizers; {folder} has neither "
            "(embed with the model itself: --embedder-kind sentence-transformers)"
        )
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    rows = np.zeros((size, model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, size, batch):
            ids = torch.arange(start, min(start + batch, size))
            x = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1)  # [B, 3]
            hidden = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state  # [B, 3, H]
            rows[start : start + len(ids)] = hidden.mean(1).numpy()  # the model's own mean pooling
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    centred = rows - rows.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    dim = min(DIM, vt.shape[0])
    table = centred @ vt[:dim].T  # [V, dim]
    rank = np.arange(1, size + 1, dtype=np.float64)
    p = (1 / rank) / (1 / rank).sum()  # Zipf: token frequency from its rank
    table *= (SIF / (SIF + p))[:, None].astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + "."))
    np.save(tmp / _VECTORS, table.astype(np.float32))
    shutil.copy(folder / "tokenizer.json", tmp / "tokenizer.json")
    meta = {"source": name, "dim": dim, "sif": SIF, "vocab": size, **source_stamp(folder)}
    (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    log.info(
        "distilled a static embedder from %s in %.0f s (%d tokens, %d-d)", name, time.monotonic() - started, size, dim
    )
    return out


class StaticEmbedder:
    """Token table lookups and a mean: the vectors of `distill_static(name)`."""

    backend = "static"
    inline = True  # cheaper than a hop to a worker thread: the gateway embeds in the request's task

    def __init__(self, name: str, folder: Path | None = None):
        from tokenizers import Tokenizer

        if folder is None and not static_ready(name):
            log.warning("no static embedder of %s yet: distilling it once (about a minute)", name)
            distill_static(name)
        folder = Path(folder) if folder else static_cache_dir(name)
        self._table = np.load(folder / _VECTORS)  # [V, dim]
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(MAX_TOKENS)
        self.info = EmbedderInfo(kind="static", name=name, dim=int(self._table.shape[1]))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.info.dim), np.float32)
        for row, enc in enumerate(self._tok.encode_batch(list(texts), add_special_tokens=False)):
            if enc.ids:
                out[row] = self._table[enc.ids].mean(0)
            else:
                out[row, 0] = 1.0  # no token: a fixed direction rather than a zero vector
        return l2_normalize(out)
