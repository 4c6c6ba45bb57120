"""How readable a method's training texts are: repetition and variety, beside their NLLs.

Cheap text statistics that need no model: the longest run of one repeated word (an LM loop reads
"embellish embellish embellish"), and distinct-2, the share of a method's word bigrams that are
different (low when texts repeat each other or themselves). The NLLs of the texts under the
generator and under a second model (``--judge``, e.g. Gemma for SmolLM2 texts: a model that did not
write them) are computed by the harness beside these, and so is :func:`label_filter_keep`, the share
of a method's texts that ``hf-gradmm build``'s label filter (its defaults) would keep.
"""

from __future__ import annotations

import random
import statistics

from hf_gradmm.dataset.filters import longest_repeat
from hf_gradmm.lm import filter_margins
from hf_gradmm.tasks import TaskSpec


def distinct_2(texts: list[str]) -> float:
    """Distinct word bigrams over all bigrams of ``texts`` (lower-cased): 1.0 when none repeats."""
    bigrams = [pair for t in texts for pair in zip(t.lower().split(), t.lower().split()[1:])]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def repetition(texts: list[str]) -> dict[str, float]:
    """The longest repeated-word run (mean and max over the texts) and distinct-2 of ``texts``."""
    runs = [longest_repeat(t) for t in texts] or [0]
    return {
        "longest_repeat_mean": statistics.mean(runs),
        "longest_repeat_max": max(runs),
        "distinct_2": distinct_2(texts),
    }


def sample_texts(texts: list[str], labels: list[int], count: int = 10, seed: int = 0) -> list[tuple[int, str]]:
    """``count`` of the texts (with their labels), a seeded draw: what the results show of a method."""
    pairs = list(zip(labels, texts))
    return random.Random(seed).sample(pairs, min(count, len(pairs)))


def label_filter_keep(model, tokenizer, task: TaskSpec, texts: list[str], labels: list[int]) -> float:
    """Share of ``texts`` the builder's default label filter keeps: the model, shown the task's
    demonstrations and contextually calibrated (``BuilderConfig`` defaults), names their own class."""
    if not texts:
        return 0.0
    return float((filter_margins(model, tokenizer, task, texts, labels) > 0).float().mean())
