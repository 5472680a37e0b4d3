"""The SWORD zText reader on a module written here with struct + zlib, and the verse alignment."""

import struct
import zlib

from fedrouter.training.data.bible import BLOCK, align, is_test, paraphrase_examples, plain, read_ztext


def _write_module(folder, verses_per_block):
    """Blocks of verses, zlib-compressed; an empty index entry first (as SWORD's headers)."""
    bzs, bzv, bzz = b"", struct.pack("<IIH", 0, 0, 0), b""
    for b, verses in enumerate(verses_per_block):
        raw = "".join(verses).encode()
        z = zlib.compress(raw)
        bzs += struct.pack("<III", len(bzz), len(z), len(raw))
        bzz += z
        offset = 0
        for v in verses:
            bzv += struct.pack("<IIH", b, offset, len(v.encode()))
            offset += len(v.encode())
    folder.mkdir(parents=True)
    for ext, data in (("bzs", bzs), ("bzv", bzv), ("bzz", bzz)):
        (folder / f"nt.{ext}").write_bytes(data)


def test_read_ztext_round_trip(tmp_path):
    blocks = [["In the <w>beginning</w> was the Word.", "And the light shineth."], ["Jesus wept."]]
    _write_module(tmp_path / "m", blocks)
    assert read_ztext(tmp_path / "m") == ["", *blocks[0], *blocks[1]]
    assert plain('He said,<note type="x">a note</note> <w lemma="1">“ Come</w> here .') == "He said, “Come here."


def test_align_pairs_verses_across_a_shifted_versification():
    kjv = ["", "and the word was with god always", "jesus wept in that place then", "blessed are the meek for sure"]
    web = [
        "",
        "extra verse only in this translation here",
        "and the word was with god forever",
        "jesus wept at that place",
        "blessed are the gentle for sure",
    ]
    pairs = align(kjv, web)
    assert [(i, w) for i, _, w in pairs] == [(1, web[2]), (2, web[3]), (3, web[4])]


def test_paraphrase_negatives_stay_in_the_split():
    pairs = [(i, f"kjv verse number {i} text", f"web verse number {i} words") for i in range(0, 5 * BLOCK)]
    for split in ("train", "test"):
        ex = paraphrase_examples(pairs, split)
        assert {"yes", "no"} == {a for _, a in ex}
        for prompt, _ in ex:
            positions = {int(x) for x in prompt.split() if x.isdigit()}
            assert all(is_test(p) == (split == "test") for p in positions)


def _plain_by_regex(osis: str) -> str:
    """`plain` as first written, one regex per step: the reference its faster form must equal."""
    import re

    text = re.sub(r"<note[^>]*>.*?</note>", "", osis, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"([‘“])\s+", r"\1", text)
    return re.sub(r"\s+([,.;:!?’”])", r"\1", text)


def test_plain_equals_the_regex_reference_on_markup_quotes_and_any_whitespace():
    pieces = ["<w>word</w>", '<note n="a">x\ny</note>', "“", "‘", "’", "”", " ", "\t", "\n", "\u00a0", "\u2009"]
    pieces += [",", ".", ";", ":", "!", "?", "Lord", "said", "<transChange>", "</transChange>", "<", ">"]
    import random

    rng = random.Random(0)
    for _ in range(3000):
        osis = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 14)))
        assert plain(osis) == _plain_by_regex(osis), repr(osis)
