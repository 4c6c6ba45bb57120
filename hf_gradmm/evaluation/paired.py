"""Paired comparison of two methods' test accuracy with a hierarchical bootstrap interval.

A method's runs form an array ``correct[k, s, i]``: training set ``k`` (a synthesis, or a seeded
draw of a sampled method), fine-tuning seed ``s``, test example ``i`` (1 when the run got it
right). Every method is scored on the same test examples, and fine-tuning seed ``s`` is the same
seed for every method, so the comparison is paired by test example and by seed.

Three things vary between evaluations and all three are resampled in each bootstrap draw: the
test examples (one draw shared by both methods: that is the pairing), the seeds (one draw
shared), and each method's training sets (drawn independently, since the sets of two methods
have nothing to pair). Syntheses with different seeds can differ by several points, so an
interval that resampled only (set, seed) pairs, or only test examples, would be too narrow.
"""

from __future__ import annotations

import numpy as np


def paired_difference(
    method: np.ndarray, reference: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """Mean accuracy of ``method`` minus that of ``reference`` and its bootstrap interval.

    Both arrays are (sets, seeds, test examples) of 0/1 with the same test examples. A method with
    one seed (zero-shot, deterministic) is compared at every seed of the other. Returns
    ``{"difference", "low", "high", "sets", "seeds", "runs"}`` (``low``/``high``: the central
    ``level`` percentile interval over ``resamples`` draws).
    """
    if method.ndim != 3 or reference.ndim != 3 or method.shape[2] != reference.shape[2]:
        raise ValueError(
            f"Paired comparison needs (sets, seeds, test examples) arrays over the same test examples; "
            f"got {method.shape} and {reference.shape}."
        )
    seeds = max(method.shape[1], reference.shape[1])
    for name, arr in (("method", method), ("reference", reference)):
        if arr.shape[1] not in (1, seeds):
            raise ValueError(f"The {name} has {arr.shape[1]} seeds and the other {seeds}: pair them by seed.")
    # Per (set, seed), the accuracy on a resampled test set is a weighted mean: one multinomial
    # count vector of the test examples serves both methods, so the draws stay paired.
    rng = np.random.default_rng(seed)
    n = method.shape[2]
    diffs = np.empty(resamples)
    for b in range(resamples):
        weights = rng.multinomial(n, np.full(n, 1.0 / n)) / n
        seed_draw = rng.integers(seeds, size=seeds)
        diffs[b] = _mean(method, weights, seed_draw, rng) - _mean(reference, weights, seed_draw, rng)
    point = method.mean(axis=2).mean() - reference.mean(axis=2).mean()
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return {
        "difference": float(point),
        "low": float(low),
        "high": float(high),
        "sets": int(method.shape[0]),
        "seeds": int(method.shape[1]),
        "runs": int(method.shape[0] * method.shape[1]),
    }


def _mean(correct: np.ndarray, weights: np.ndarray, seed_draw: np.ndarray, rng: np.random.Generator) -> float:
    """Mean accuracy over a resample: sets drawn with replacement, the shared seed and test draws."""
    sets = rng.integers(correct.shape[0], size=correct.shape[0])
    seeds = seed_draw if correct.shape[1] > 1 else np.zeros(1, dtype=int)
    accuracy = correct[sets][:, seeds] @ weights  # (sets, seeds)
    return float(accuracy.mean())


def correct_array(runs: list[dict]) -> np.ndarray:
    """The (sets, seeds, test examples) 0/1 array of one method's runs on one model (``correct``
    strings of '0'/'1', run keys ``set`` and ``seed``)."""
    sets = sorted({r["set"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    if len(runs) != len(sets) * len(seeds):
        raise ValueError(f"{len(runs)} runs do not fill a grid of {len(sets)} sets x {len(seeds)} seeds.")
    out = np.zeros((len(sets), len(seeds), len(runs[0]["correct"])))
    for r in runs:
        out[sets.index(r["set"]), seeds.index(r["seed"])] = np.frombuffer(r["correct"].encode(), dtype=np.uint8) - 48
    return out
