"""A sentence-transformers model (mean pooling) on ONNX Runtime: the same vector space, a few ms per prompt.

Owns the offline export (`export_onnx`, run once by `fedrouter models prepare`) and `OnnxEmbedder`,
which serves the exported graph. The export is of the packaged weights, so its vectors are the
PyTorch embedder's vectors: fp32 agrees to rounding, and the int8 variant is measured against
PyTorch in benchmarks/routing.py (same adapter on the held-out routing prompts, cosine per prompt).

int8 recipe (dynamic quantisation): every weight MatMul per-channel int8, except the FFN
down-projections (`layer.N/output/dense`), whose inputs are post-GELU activations with outliers
that one int8 scale per tensor cannot hold; with them quantised too, a few prompts fall below
cosine 0.99 (measured while choosing the recipe). Attention-score MatMuls (two activations) stay
fp32. Export needs torch + onnx; serving needs only onnxruntime + tokenizers (no torch import).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedrouter.router.release import EmbedderInfo

# int8-all also quantises the FFN down-projections: faster, further from PyTorch (benchmarks/routing.py)
VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int8-all": "model.int8-all.onnx"}
_META = "export.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def embedder_cache_dir(name: str, form: str) -> Path:
    """Where a derived form (`onnx`, `static`) of embedder `name` (a name or folder) lives:
    FEDROUTER_CACHE or ~/.cache/fedrouter."""
    from fedrouter.router.cache import cache_root

    root = cache_root()
    stem = Path(name).name or "embedder"
    return root / "embedders" / f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:8]}-{form}"


def onnx_cache_dir(name: str) -> Path:
    """Where the ONNX export of embedder `name` lives."""
    return embedder_cache_dir(name, "onnx")


def source_stamp(folder: Path) -> dict:
    """What identifies the weights an export was made from (a changed folder invalidates the export)."""
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return {"weights": [[w.name, w.stat().st_size] for w in weights]}


def _check_mean_pooling(folder: Path) -> int:
    """The model's max_seq_length; refuses models whose pooling is not plain mean pooling + normalise."""
    modules = json.loads((folder / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    pooling = next((folder / m["path"] / "config.json" for m in modules if m["type"].endswith("Pooling")), None)
    cfg = json.loads(pooling.read_text()) if pooling and pooling.exists() else {}
    mean = cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode") == "mean"  # older / newer formats
    if kinds[:2] != ["Transformer", "Pooling"] or not mean:
        raise ValueError(f"ONNX export supports Transformer + mean Pooling models; {folder} has {kinds} ({cfg})")
    st = folder / "sentence_bert_config.json"
    return int(json.loads(st.read_text()).get("max_seq_length", 256)) if st.exists() else 256


def export_onnx(name: str, out: Path | None = None, *, force: bool = False) -> Path:
    """Export sentence-transformers model `name` (a name of router.embed or a folder) to ONNX, fp32 and
    int8, with its tokenizer, into `out` (default `onnx_cache_dir(name)`). Offline; written atomically."""
    import torch
    from transformers import AutoModel

    from fedrouter.router.embed import resolve_model_folder

    folder = Path(resolve_model_folder(name))
    out = Path(out) if out else onnx_cache_dir(name)
    if not force and export_ready(name, out):
        return out
    max_len = _check_mean_pooling(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    use_types = getattr(model.config, "type_vocab_size", 0) > 0

    class Encoder(torch.nn.Module):  # positional inputs; [B, T] -> last hidden state [B, T, H]
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.m(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state

    inputs = _INPUTS if use_types else _INPUTS[:2]
    sample = tuple(torch.ones(2, 7, dtype=torch.long) for _ in inputs)
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out.parent if out.parent.exists() else None))
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Encoder(model),
                sample,
                str(tmp / VARIANTS["fp32"]),
                input_names=list(inputs),
                output_names=["last_hidden_state"],
                dynamic_axes={k: {0: "batch", 1: "tokens"} for k in (*inputs, "last_hidden_state")},
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic shapes are plain
            )
        _quantize(tmp / VARIANTS["fp32"], tmp / VARIANTS["int8"], ffn_out_fp32=True)
        _quantize(tmp / VARIANTS["fp32"], tmp / VARIANTS["int8-all"], ffn_out_fp32=False)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the export from other users of the cache
        shutil.copy(folder / "tokenizer.json", tmp / "tokenizer.json")
        meta = {
            "source": str(folder),
            "name": name,
            "dim": int(model.config.hidden_size),
            "max_seq_length": max_len,
            "inputs": list(inputs),
            "pooling": "mean",
            "normalize": True,
            **source_stamp(folder),
        }
        (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _quantize(src: Path, dst: Path, ffn_out_fp32: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    exclude = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and (
            not any(i in weights for i in n.input)
            or (ffn_out_fp32 and "/output/dense/" in n.name and "/attention/" not in n.name)
        )
    ]
    logging.disable(logging.WARNING)  # onnxruntime's advice to pre-process, on the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=exclude,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)


def derived_ready(name: str, out: Path, meta_file: str, files: list[str]) -> bool:
    """True if a form derived from embedder `name` (its ONNX export, its static table) exists in
    `out` with all of `files`, and its `meta_file` records the weights now installed."""
    from fedrouter.router.embed import resolve_model_folder

    try:
        meta = json.loads((out / meta_file).read_text())
        folder = Path(resolve_model_folder(name))
    except (OSError, ValueError):
        return False
    return all((out / f).exists() for f in files) and meta.get("weights") == source_stamp(folder)["weights"]


def export_ready(name: str, out: Path | None = None) -> bool:
    """True if an export of `name` exists and was made from the weights now installed."""
    return derived_ready(name, Path(out) if out else onnx_cache_dir(name), _META, list(VARIANTS.values()))


class OnnxEmbedder:
    """The exported model on ONNX Runtime's CPU provider; `variant` one of VARIANTS."""

    def __init__(self, name: str, variant: str = "int8", threads: int = 1, folder: Path | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if variant not in VARIANTS:
            raise ValueError(f"unknown ONNX variant {variant!r} ({', '.join(VARIANTS)})")
        folder = Path(folder) if folder else onnx_cache_dir(name)
        meta = json.loads((folder / _META).read_text())
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.enable_truncation(meta["max_seq_length"])
        pad = self._tok.padding or {}
        self._tok.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))  # to longest
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(threads, 0)  # 0: onnxruntime's default (all cores)
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(folder / VARIANTS[variant]), opts, providers=["CPUExecutionProvider"])
        self._inputs = meta["inputs"]
        self.backend = f"onnx-{variant}"
        self.info = EmbedderInfo(kind="sentence-transformers", name=name, dim=int(meta["dim"]))

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = [self._embed(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.info.dim), np.float32)

    def _embed(self, texts: list[str]) -> np.ndarray:
        enc = self._tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], np.int64)  # [B, T]
        mask = np.array([e.attention_mask for e in enc], np.int64)  # [B, T]
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {k: feed[k] for k in self._inputs})[0]  # [B, T, H]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # [B, H]
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)
