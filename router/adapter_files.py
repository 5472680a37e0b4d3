"""One PEFT adapter folder on disk: its safetensors header checked against its config, and its digest.

A release is only as good as the weights it points at, so validation reads every adapter's
safetensors header (never the tensors): the header must parse, every tensor's byte range must lie
in the file and match its dtype and shape, the file must end where the last tensor does (a
truncated copy fails here, not later in vLLM), and the LoRA tensors must fit `adapter_config.json`
(target modules, rank). The digest is what identifies an adapter's content: two folders with the
same config and weights have the same digest, whatever they are called.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

_MAX_HEADER = 100 * 1024 * 1024  # a LoRA header is kilobytes; anything near this is not one
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def read_config(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """adapter_config.json as a dict, or the reason it cannot be read."""
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError, RecursionError) as e:
        return None, f"{ADAPTER_CONFIG} is not valid UTF-8 JSON: {e}"
    if not isinstance(config, dict):
        return None, f"{ADAPTER_CONFIG} is not a JSON object"
    return config, None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def safetensors_header(file: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Tensor name -> {dtype, shape, data_offsets} of a safetensors file, and what is wrong with it."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n <= 1 or n > min(size - 8, _MAX_HEADER):
                return {}, [f"{file.name} is not a safetensors file (header length {n}, file {size} bytes)"]
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        return {}, [f"{file.name} has an unreadable header: {e}"]
    if not isinstance(header, dict):
        return {}, [f"{file.name} has a header that is not a JSON object"]
    header.pop("__metadata__", None)
    problems, end = [], 0
    for name, t in header.items():
        if not isinstance(t, dict):
            problems.append(f"{file.name}: tensor {name!r} has no description")
            continue
        dtype, shape, offsets = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if dtype not in _DTYPE_BYTES or not _ints(shape) or not _ints(offsets) or len(offsets) != 2:
            problems.append(f"{file.name}: tensor {name!r} has a malformed entry {t}")
            continue
        start, stop = offsets
        if not 0 <= start <= stop or stop - start != math.prod(shape) * _DTYPE_BYTES[dtype]:
            problems.append(f"{file.name}: tensor {name!r} {dtype}{shape} does not fill its bytes {offsets}")
        end = max(end, stop)
    if not problems and 8 + n + end != size:
        problems.append(f"{file.name} is {size} bytes, its header describes {8 + n + end} (truncated or padded)")
    return header, problems


def _ints(x: object) -> bool:
    return isinstance(x, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in x)


def check_adapter_folder(folder: Path, max_r: int) -> list[str]:
    """Every defect of a PEFT LoRA folder, checked against its config and the release's rank."""
    config, error = read_config(folder)
    if config is None:
        return [error or ""]
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        return [f"{ADAPTER_CONFIG} has no positive integer rank 'r'"]
    if r > max_r:
        return [f"rank {r} is above the release's lora.r {max_r}"]
    header, problems = safetensors_header(folder / ADAPTER_WEIGHTS)
    if problems:
        return problems
    targets = config.get("target_modules")
    ranks = config.get("rank_pattern") or {}
    lora = {name: t for name, t in header.items() if ".lora_A." in name or ".lora_B." in name}
    if not lora:
        return [f"{ADAPTER_WEIGHTS} holds no LoRA tensors (lora_A / lora_B)"]
    modules: dict[str, set[str]] = {}
    for name, t in lora.items():
        module, part = name.split(".lora_", 1)
        modules.setdefault(module, set()).add(part[0])
        suffix = module.rsplit(".", 1)[-1]
        if isinstance(targets, list) and suffix not in targets:
            problems.append(f"tensor {name!r} adapts {suffix!r}, which is not in target_modules {targets}")
        shape = t["shape"]
        rank = shape[0] if part[0] == "A" else (shape[1] if len(shape) == 2 else -1)
        if len(shape) != 2 or (not ranks and rank != r) or rank > max_r:
            problems.append(f"tensor {name!r} has shape {shape}, not a rank-{r} LoRA {'A' if part[0] == 'A' else 'B'}")
    problems += [f"module {m!r} lacks lora_A or lora_B" for m, parts in modules.items() if parts != {"A", "B"}]
    return problems[:10]  # enough to see what is wrong


def adapter_digest(folder: Path) -> str:
    """sha256 over the adapter's config and weights: its identity by content."""
    h = hashlib.sha256()
    for fname in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        h.update(fname.encode() + b"\0")
        with open(folder / fname, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()
