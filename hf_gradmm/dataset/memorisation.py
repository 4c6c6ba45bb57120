"""Memorisation report: how much of each synthetic text is found verbatim in the real data.

Per synthetic text: the real text it shares the longest run of consecutive words with (its
nearest real text), that run's length, the share of its word 8-grams found anywhere in the
real data, and the word-set Jaccard similarity to the real text with the most words in common.
A text is flagged as a copy when it shares a run of at least ``copy_ngram`` words with one real
text. Words are lower-cased and stripped of surrounding punctuation before comparison.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower()))


def _ngrams(tokens: tuple[str, ...], n: int):
    return (tokens[i : i + n] for i in range(len(tokens) - n + 1))


@dataclass
class Overlap:
    """How one synthetic text overlaps the real data."""

    longest_common_ngram: int  # words in the longest run shared with a single real text
    nearest_real_index: int  # that real text (index into the real texts); -1 when nothing is shared
    ngram8_share: float  # share of the text's word 8-grams that occur in the real data (0 if it has none)
    max_jaccard: float  # highest word-set Jaccard similarity to any real text
    copied: bool


class RealIndex:
    """Word n-gram index of the real texts, built lazily per n (a dict n-gram -> first text)."""

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.tokens = [words(t) for t in texts]
        self.sets = [frozenset(t) for t in self.tokens]
        self._grams: dict[int, dict[tuple[str, ...], int]] = {}
        self.max_len = max((len(t) for t in self.tokens), default=0)

    def grams(self, n: int) -> dict[tuple[str, ...], int]:
        if n not in self._grams:
            index: dict[tuple[str, ...], int] = {}
            for i, tokens in enumerate(self.tokens):
                for gram in _ngrams(tokens, n):
                    index.setdefault(gram, i)
            self._grams[n] = index
        return self._grams[n]

    def longest_common(self, tokens: tuple[str, ...]) -> tuple[int, int]:
        """(length, real index) of the longest word run shared with a real text. Sharing an n-gram
        implies sharing every shorter one, so a binary search over n finds it."""
        lo, hi, found = 0, min(len(tokens), self.max_len), -1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            index = self.grams(mid)
            hit = next((index[g] for g in _ngrams(tokens, mid) if g in index), None)
            if hit is None:
                hi = mid - 1
            else:
                lo, found = mid, hit
        return lo, found

    def overlap(self, text: str, copy_ngram: int = 8) -> Overlap:
        tokens = words(text)
        length, nearest = self.longest_common(tokens)
        grams8 = list(_ngrams(tokens, 8))
        index8 = self.grams(8)
        share = sum(g in index8 for g in grams8) / len(grams8) if grams8 else 0.0
        mine = frozenset(tokens)
        jaccard = max((len(mine & s) / len(mine | s) for s in self.sets if s), default=0.0) if mine else 0.0
        return Overlap(length, nearest, share, jaccard, length >= copy_ngram)


def memorisation_report(synthetic: list[str], real: list[str], copy_ngram: int = 8) -> tuple[list[dict], dict]:
    """Per-text overlaps (with the nearest real text spelled out) and their summary."""
    index = RealIndex(real)
    rows = []
    for text in synthetic:
        o = index.overlap(text, copy_ngram)
        rows.append({**asdict(o), "nearest_real_text": real[o.nearest_real_index] if o.nearest_real_index >= 0 else ""})
    n = max(1, len(rows))
    summary = {
        "real_texts_compared": len(real),
        "copy_ngram": copy_ngram,
        "flagged_copies": sum(r["copied"] for r in rows),
        "max_longest_common_ngram": max((r["longest_common_ngram"] for r in rows), default=0),
        "mean_longest_common_ngram": sum(r["longest_common_ngram"] for r in rows) / n,
        "mean_ngram8_share": sum(r["ngram8_share"] for r in rows) / n,
        "max_ngram8_share": max((r["ngram8_share"] for r in rows), default=0.0),
        "mean_max_jaccard": sum(r["max_jaccard"] for r in rows) / n,
    }
    return rows, summary
