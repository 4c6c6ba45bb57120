"""The builder's text filters, as plain functions of rows: cleaning, duplicates, balancing.

A row is a dict with at least ``text``, ``label`` and (after scoring) ``score``; lower scores
are better. The label filter, which needs the model, is in builder.py.
"""

from __future__ import annotations

from datasketch import MinHash, MinHashLSH


def normalise(text: str) -> str:
    """Lower-cased, whitespace-collapsed: the key of exact duplicates."""
    return " ".join(text.lower().split())


def longest_repeat(text: str) -> int:
    """Longest run of the same word (lower-cased, punctuation stripped) in a row."""
    best, run, last = 0, 0, None
    for word in (w.strip(".,!?;:\"'()").lower() for w in text.split()):
        run = run + 1 if word == last else 1
        best, last = max(best, run), word
    return best


def shingles(text: str, n: int = 5) -> set[bytes]:
    """Character ``n``-grams of the normalised text (what MinHash compares)."""
    text = normalise(text)
    return {text[i : i + n].encode() for i in range(max(1, len(text) - n + 1))}


def clean(rows: list[dict], min_words: int, max_repeat: int) -> tuple[list[dict], list[dict]]:
    """Collapse whitespace; returns (rows long enough, rows without an LM loop of ``max_repeat`` words)."""
    for r in rows:
        r["text"] = " ".join(r["text"].split())
    long_enough = [r for r in rows if len(r["text"].split()) >= max(1, min_words)]
    if not max_repeat:
        return long_enough, long_enough
    return long_enough, [r for r in long_enough if longest_repeat(r["text"]) < max_repeat]


def exact_duplicates_dropped(rows: list[dict]) -> list[dict]:
    """The first (best-scored, as rows come sorted) of each group of normalised-equal texts."""
    seen, unique = set(), []
    for r in rows:
        key = normalise(r["text"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def near_duplicates_dropped(rows: list[dict], threshold: float, permutations: int) -> list[dict]:
    """Rows whose MinHash Jaccard estimate to a kept row stays below ``threshold`` (1.0 keeps all)."""
    if threshold >= 1.0:
        return rows
    lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
    hashes, kept = {}, []
    for i, r in enumerate(rows):
        m = MinHash(num_perm=permutations, seed=1)
        m.update_batch(list(shingles(r["text"])))
        # LSH finds candidates; the MinHash estimate confirms them (LSH alone admits false positives).
        if any(m.jaccard(hashes[j]) >= threshold for j in lsh.query(m)):
            continue
        lsh.insert(i, m)
        hashes[i] = m
        kept.append(r)
    return kept


def top_n(rows: list[dict], num_labels: int, n: int) -> list[dict]:
    """The ``n`` best-scored rows of each class (rows come sorted by score), sorted by score."""
    kept = [r for c in range(num_labels) for r in [x for x in rows if x["label"] == c][:n]]
    return sorted(kept, key=lambda r: r["score"])


def balanced(rows: list[dict], num_labels: int) -> list[dict]:
    """The reference's balancing for any number of classes: every class whose mean score is above
    the lowest class mean loses its worst texts until its mean is at most that (lower score is
    better; each class keeps at least one text)."""
    groups = [[r for r in rows if r["label"] == c] for c in range(num_labels)]
    groups = [g for g in groups if g]  # rows are sorted by score already
    target = min(sum(r["score"] for r in g) / len(g) for g in groups)
    kept = []
    for group in groups:
        while len(group) > 1 and sum(r["score"] for r in group) / len(group) > target + 1e-12:
            group = group[:-1]
        kept += group
    return sorted(kept, key=lambda r: r["score"])
