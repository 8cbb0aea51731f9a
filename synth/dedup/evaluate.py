"""Measuring near-dup detection: planted copies of real passages and exact ground truth.

A data team tuning `dedup_minhash` (bands, rows, threshold) needs a labelled set
where the right answer is known. `planted_passages` cuts real book text into
passages and plants exact and edited copies (word substitutions, insertions,
deletions, reordered sentences); `true_duplicate_pairs` finds every pair with
exact Jaccard >= t on word n-grams with a prefix-filter similarity join (exact,
no sampling); `doc_f1` scores a method by the documents it flags as having a
near duplicate.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from synth.dedup.signatures import Shingler

_START = re.compile(r"\*\*\*\s*START OF (THIS|THE) PROJECT GUTENBERG[^\n]*\n")
_END = re.compile(r"\*\*\*\s*END OF (THIS|THE) PROJECT GUTENBERG")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def book_body(text: str) -> str:
    start = _START.search(text)
    end = _END.search(text)
    return text[start.end() if start else 0 : end.start() if end else len(text)]


def book_passages(paths: Iterable[Path], rng: random.Random, min_words: int = 25, max_words: int = 95) -> list[str]:
    """Consecutive word windows of random length within paragraphs-joined book text."""
    out: list[str] = []
    for path in paths:
        body = book_body(path.read_text(encoding="utf-8", errors="replace"))
        words = body.split()
        i = 0
        while i + min_words <= len(words):
            n = rng.randint(min_words, max_words)
            out.append(" ".join(words[i : i + n]))
            i += n
    return out


def _edit(text: str, rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    words = text.split()
    kind = rng.choices(["exact", "substitute", "insert", "delete", "reorder", "mixed"], [2, 3, 2, 2, 1, 2])[0]
    # edits scale with length so copies straddle the 0.8 threshold at any size
    k = max(1, int(rng.expovariate(1 / 2.0) * max(1.0, len(words) / 60)))
    if kind == "exact":
        # same words, different case and spacing: still an exact near-dup
        return (text.upper() if rng.random() < 0.2 else "  ".join(words)), kind
    if kind in ("substitute", "mixed"):
        for _ in range(k):
            words[rng.randrange(len(words))] = rng.choice(vocab)
    if kind in ("insert", "mixed"):
        for _ in range(k):
            words.insert(rng.randrange(len(words) + 1), rng.choice(vocab))
    if kind in ("delete", "mixed"):
        for _ in range(min(k, len(words) - 5)):
            del words[rng.randrange(len(words))]
    if kind == "reorder":
        sentences = _SENTENCE.split(" ".join(words))
        if len(sentences) > 1:
            i, j = rng.sample(range(len(sentences)), 2)
            sentences[i], sentences[j] = sentences[j], sentences[i]
        else:
            cut = rng.randrange(1, len(words))
            sentences = [" ".join(words[cut:]), " ".join(words[:cut])]
        return " ".join(sentences), kind
    return " ".join(words), kind


def planted_passages(
    paths: Iterable[Path],
    seed: int = 0,
    total: int = 22_500,
    copy_share: float = 1 / 3,
    min_words: int = 25,
    max_words: int = 95,
) -> tuple[list[str], list[str]]:
    """(texts, kinds): originals and planted copies shuffled together; kind is 'original' or the edit."""
    rng = random.Random(seed)
    originals = book_passages(sorted(paths), rng, min_words, max_words)
    rng.shuffle(originals)
    n_copies = int(total * copy_share)
    originals = originals[: max(1, total - n_copies)]
    vocab = [w for p in originals[:2000] for w in p.split()]
    items = [(t, "original") for t in originals]
    for _ in range(min(n_copies, total - len(originals))):
        src = rng.choice(originals)
        items.append(_edit(src, rng, vocab))
    rng.shuffle(items)
    return [t for t, _ in items], [k for _, k in items]


def shingle_sets(texts: list[str], ngram: int = 5) -> list[frozenset[str]]:
    """The shingles `dedup_minhash` hashes, as strings (same tokenizer, same rules)."""
    return [frozenset(g) for g in Shingler(ngram).shingle_strings(pa.array(texts, pa.string()))]


def true_duplicate_pairs(sets: list[frozenset[str]], threshold: float = 0.8) -> dict[tuple[int, int], float]:
    """Every pair (i < j) with exact Jaccard >= threshold, by prefix filtering.

    Two sets can reach Jaccard t only if they share a token among the first
    |x| - ceil(t |x|) + 1 tokens of each in one global order; ordering tokens
    rarest first keeps those prefixes selective.
    """
    df = Counter(tok for s in sets for tok in s)
    index: dict[str, list[int]] = defaultdict(list)
    candidates: set[tuple[int, int]] = set()
    for d, s in enumerate(sets):
        if not s:
            continue
        ordered = sorted(s, key=lambda tok: (df[tok], tok))
        prefix = len(ordered) - math.ceil(threshold * len(ordered) - 1e-9) + 1
        for tok in ordered[:prefix]:
            for other in index[tok]:
                candidates.add((other, d))
            index[tok].append(d)
    out: dict[tuple[int, int], float] = {}
    for i, j in candidates:
        a, b = sets[i], sets[j]
        inter = len(a & b)
        jac = inter / (len(a) + len(b) - inter)
        if jac >= threshold - 1e-12:
            out[(i, j)] = jac
    return out


def doc_f1(flagged: set[int], truth_pairs: Iterable[tuple[int, int]]) -> dict[str, float]:
    """Precision/recall/F1 over documents that have (or are flagged with) a near duplicate."""
    truth = {d for p in truth_pairs for d in p}
    tp = len(flagged & truth)
    precision = tp / len(flagged) if flagged else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": len(flagged), "truth": len(truth)}
