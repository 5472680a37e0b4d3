"""Two verse-aligned public-domain English Bibles (Debian `sword-text-kjv`, `sword-text-web`):
a paraphrase-detection task (≈ QQP) and a KJV -> modern English rewrite task (≈ WebNLG-style
rewriting, scored by ROUGE-1).

The SWORD zText module files are read with struct + zlib (no libsword):
    <part>.bzs  block index, 12 bytes per block: offset, compressed size, uncompressed size (uint32 LE)
    <part>.bzv  verse index, 10 bytes per entry: block, offset in the block (uint32), size (uint16)
    <part>.bzz  the zlib-compressed blocks
Only the New Testaments are used: both follow the same verse order there (the WEB module's OT
carries the deuterocanon, NRSVA versification). Verses are paired in order, each KJV verse with
the WEB verse within ±3 positions that shares the most words (versifications differ by a verse
here and there). Train and test are split by blocks of 50 verses (every 5th block is for testing),
so that a test verse's text never appears in a training prompt, not even as a negative pair.
"""

from __future__ import annotations

import re
import struct
import zlib
from functools import lru_cache
from pathlib import Path

from fedrouter.training.data.tasks import Example

MODULES = {"kjv": "engKJV2006eb", "web": "engWEB2015eb"}  # module folder inside each package
BLOCK = 50  # verses per split block


def read_ztext(module_dir: Path, part: str = "nt") -> list[str]:
    """Every entry of a zText module part, in index order ("" for empty entries), OSIS markup kept."""
    bzs = (module_dir / f"{part}.bzs").read_bytes()
    bzv = (module_dir / f"{part}.bzv").read_bytes()
    bzz = (module_dir / f"{part}.bzz").read_bytes()
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs) - 11, 12)]
    cache: dict[int, bytes] = {}
    out = []
    for i in range(0, len(bzv) - 9, 10):
        block, offset, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0 or block >= len(blocks):
            out.append("")
            continue
        if block not in cache:
            start, compressed, _ = blocks[block]
            cache[block] = zlib.decompress(bzz[start : start + compressed])
        out.append(cache[block][offset : offset + size].decode("utf-8", "replace"))
    return out


_NOTE = re.compile(r"<note[^>]*>.*?</note>", re.S)
_TAG = re.compile(r"<[^>]+>")
_WORD = re.compile(r"[a-z]+")


def plain(osis: str) -> str:
    """Verse text without notes and markup, single-spaced, no space after an opening quote or
    before punctuation (str methods where a regex would do the same, for speed: ~16k verses)."""
    text = " ".join(_TAG.sub(" ", _NOTE.sub("", osis) if "<note" in osis else osis).split())
    for quote in "‘“":
        text = text.replace(quote + " ", quote)
    for mark in ",.;:!?’”":
        text = text.replace(" " + mark, mark)
    return text


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def align(kjv: list[str], web: list[str], window: int = 3, min_overlap: float = 0.2) -> list[tuple[int, str, str]]:
    """(KJV position, KJV verse, WEB verse) for every KJV verse with a WEB partner in the window."""
    web_words = [_words(w) for w in web]  # once per verse: each is compared with up to 2 * window + 1 KJV verses
    pairs, drift = [], 0
    for i, k in enumerate(kjv):
        if len(k.split()) < 4:  # empty entries and headings
            continue
        kw = _words(k)
        best, best_j = 0.0, -1
        for j in range(max(0, i + drift - window), min(len(web), i + drift + window + 1)):
            ww = web_words[j]
            overlap = len(kw & ww) / max(1, len(kw | ww))
            if overlap > best:
                best, best_j = overlap, j
        if best >= min_overlap:
            pairs.append((i, k, web[best_j]))
            drift = best_j - i
    return pairs


def module_dir(root: Path, name: str) -> Path:
    return root / "usr" / "share" / "sword" / "modules" / "texts" / "ztext" / MODULES[name]


@lru_cache(maxsize=2)
def verse_pairs(root: str) -> tuple[tuple[int, str, str], ...]:
    """Aligned (position, KJV, WEB) verses from the extracted packages under `root`."""
    kjv = [plain(t) for t in read_ztext(module_dir(Path(root), "kjv"))]
    web = [plain(t) for t in read_ztext(module_dir(Path(root), "web"))]
    return tuple(align(kjv, web))


def is_test(position: int) -> bool:
    return (position // BLOCK) % 5 == 4


def paraphrase_examples(pairs, split: str, max_words: int = 30) -> list[Example]:
    """Aligned pair -> "yes"; the KJV verse with a nearby (same block, 2-3 verses on) WEB verse -> "no"."""
    chosen = [p for p in pairs if is_test(p[0]) == (split == "test") and len(p[1].split()) <= max_words]
    out = []
    for n, (pos, k, w) in enumerate(chosen):
        out.append((_paraphrase_prompt(k, w), "yes"))
        other = chosen[n + 2] if n + 2 < len(chosen) else chosen[n - 2]
        if other[0] // BLOCK == pos // BLOCK and other[2] != w:
            out.append((_paraphrase_prompt(k, other[2]), "no"))
    return out


def _paraphrase_prompt(a: str, b: str) -> str:
    return f"Do these two sentences say the same thing? Answer yes or no.\nA: {a}\nB: {b}"


def rewrite_examples(pairs, split: str, max_words: int = 16) -> list[Example]:
    """KJV verse -> its WEB verse, for short verses (answers fit in 32 tokens)."""
    return [
        (f"Rewrite this verse in modern English: {k}", w)
        for pos, k, w in pairs
        if is_test(pos) == (split == "test") and len(k.split()) <= max_words and len(w.split()) <= max_words + 4
    ]
