"""The real pool and the class targets built from it.

Per class, a seeded draw of ``target_examples`` real texts (their mean gradient is the class
target) and ``heldout_examples`` more (the calibration report's held-out texts). The targets are
computed at every target checkpoint, clipped and noised under differential privacy, optionally
centred on the classes' mean, and wrapped in one :class:`MatchingObjective` per (checkpoint,
class): the only place a synthesis reads the real data.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter

import torch
from datasets import Dataset

from hf_gradmm.engine.gradients import ClassTarget, MatchedModules, class_target, prepare_matched
from hf_gradmm.engine.objective import Checkpoint, MatchingObjective, pair_pinned, template_parts
from hf_gradmm.lm import text_ids
from hf_gradmm.targets.controls import control_targets
from hf_gradmm.targets.privacy import DP_LOCAL_NOTE, privatise
from hf_gradmm.tasks import TaskSpec
from hf_gradmm.tasks.registry import join_pair, split_pair

# parts[c]: one (checkpoint, that checkpoint's objective for class c) per target checkpoint
Parts = dict[int, list[tuple[Checkpoint, MatchingObjective]]]
# The most free tokens seq_len 0 (auto) gives a synthetic text: an x-step's time grows with the length, and
# the mean length of long real texts (thousands of tokens) would make every round take many minutes.
AUTO_SEQ_LEN_CAP = 128
_NO_LIMIT = 10**7  # tokenizers without a known limit report model_max_length as ~1e30


def check_pool(
    source: Dataset | None, task: TaskSpec, target_examples: int, heldout_examples: int, split: str = "train"
) -> None:
    """Refuse a real split with a class too small for the pool, naming the class, its count and the
    flags to pass. Counts labels only, so a caller can run it before loading a model."""
    if source is None or len(source) == 0:
        raise ValueError(f"The real {split} split is empty; give a dataset with examples.")
    counts = Counter(source["label"])
    need = target_examples + heldout_examples
    short = {name: counts.get(c, 0) for c, name in enumerate(task.label_names) if counts.get(c, 0) < need}
    if not short:
        return
    least = min(counts.get(c, 0) for c in range(task.num_labels))
    if least == 0:
        empty = [name for name, n in short.items() if n == 0]
        raise ValueError(f"Class(es) {empty} have no example in the real {split} split; add examples of them.")
    heldout = min(heldout_examples, least // 5)
    raise ValueError(
        f"Class(es) {short} (examples in the real {split} split) have fewer than target_examples + "
        f"heldout_examples = {target_examples} + {heldout_examples} = {need}. Pass e.g. --target-examples "
        f"{least - heldout} --heldout-examples {heldout} (at most {least} together), or add examples."
    )


def real_pool(
    source: Dataset | None, task: TaskSpec, target_examples: int, heldout_examples: int, seed: int, split: str = "train"
) -> dict[int, dict[str, list[str]]]:
    """Per class: the ``target`` texts (their mean gradient is the class target) and ``heldout``
    texts (calibration), a seeded draw from ``source``; the evaluation harness and the audit reuse it."""
    check_pool(source, task, target_examples, heldout_examples, split)
    need = target_examples + heldout_examples
    rng = random.Random(seed)
    pool = {}
    labels = source["label"]
    texts = source["text"]
    for c in range(task.num_labels):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        rng.shuffle(idx)
        pool[c] = {
            "target": [texts[i] for i in idx[:target_examples]],
            "heldout": [texts[i] for i in idx[target_examples:need]],
        }
    return pool


def context_length(model, tokenizer) -> int | None:
    """The longest input ``model`` takes: the smaller of ``tokenizer.model_max_length`` and
    ``model.config.max_position_embeddings``, leaving out unset values (None, the ~1e30 sentinel)."""
    config = getattr(model, "config", None)
    sizes = (getattr(tokenizer, "model_max_length", None), getattr(config, "max_position_embeddings", None))
    known = [int(n) for n in sizes if isinstance(n, int) and 0 < n < _NO_LIMIT]
    return min(known) if known else None


def fit_context(pool: dict, tokenizer, task: TaskSpec, context: int | None) -> dict:
    """The pool with every text whose prompt (template and special tokens included) is longer than
    ``context`` tokens cut to its first tokens, so that the label is still predicted after the whole
    template; warns with the count per class. ``context`` None: the pool unchanged."""
    if context is None:
        return pool
    cut: Counter = Counter()

    def excess_of(text: str) -> int:
        return len(tokenizer(task.format_prompt(text))["input_ids"]) - context

    def fit_pair(text: str, c: int) -> str:  # cut the longer segment until the prompt fits
        segments, excess = list(split_pair(text)), excess_of(text)
        if excess <= 0:
            return text
        cut[c] += 1
        while excess > 0:
            ids = [text_ids(tokenizer, t) for t in segments]
            longer = int(len(ids[1]) > len(ids[0]))
            if len(ids[longer]) <= 1:
                raise ValueError(
                    f"The template {task.template!r} alone is longer than the model's context of {context} tokens."
                )
            segments[longer] = tokenizer.decode(ids[longer][: max(1, len(ids[longer]) - excess)])
            excess = excess_of(join_pair(*segments))
        return join_pair(*segments)

    def fit(text: str, c: int) -> str:
        if task.is_pair:
            return fit_pair(text, c)
        ids, excess = text_ids(tokenizer, text), excess_of(text)
        keep = len(ids)
        while excess > 0:  # decoding a prefix and re-tokenising may shift a token: check again
            keep -= excess
            if keep < 1:
                raise ValueError(
                    f"The template {task.template!r} alone is longer than the model's context of {context} tokens."
                )
            text = tokenizer.decode(ids[:keep])
            excess = excess_of(text)
        cut[c] += keep < len(ids)
        return text

    out = {c: {part: [fit(t, c) for t in texts] for part, texts in parts.items()} for c, parts in pool.items()}
    if sum(cut.values()):
        per_class = ", ".join(f"{task.label_names[c]} {n}" for c, n in sorted(cut.items()) if n)
        total = sum(len(texts) for parts in pool.values() for texts in parts.values())
        warnings.warn(
            f"{sum(cut.values())} of the {total} real examples in the target pool ({per_class}) are longer than "
            f"the model's context of {context} tokens with the template; each was cut to its first tokens to fit.",
            stacklevel=2,
        )
    return out


def text_lengths(pool: dict, tokenizer, seq_len: int, label_names: list[str] | None = None) -> dict[int, int]:
    """Free tokens per text, per class: ``seq_len``, or (0) the mean token length of the class's
    target examples, as the reference code does, capped at :data:`AUTO_SEQ_LEN_CAP` (with a warning
    naming the classes and the means)."""
    if seq_len:
        return {c: seq_len for c in pool}
    lengths = {c: [len(text_ids(tokenizer, t)) for t in pool[c]["target"]] for c in pool}
    means = {c: max(2, round(sum(n) / len(n))) for c, n in lengths.items()}
    long = {(label_names[c] if label_names else c): n for c, n in means.items() if n > AUTO_SEQ_LEN_CAP}
    if long:
        warnings.warn(
            f"seq_len 0 (auto): the target examples average {long} tokens (per class), so the synthetic texts are "
            f"capped at {AUTO_SEQ_LEN_CAP} free tokens (an x-step's time grows with the length). Pass --seq-len N "
            "to choose the length yourself.",
            stacklevel=2,
        )
    return {c: min(n, AUTO_SEQ_LEN_CAP) for c, n in means.items()}


def pair_layout(
    pool: dict, tokenizer, task: TaskSpec, seq_len: int, second_seq_len: int
) -> tuple[dict[int, int], dict[int, torch.Tensor]]:
    """A pair task's free positions per class: segment 1 (``seq_len``, 0 = auto from the class's
    target examples' first segments), the template's middle tokens (pinned), segment 2
    (``second_seq_len``, 0 = auto from the second segments). Returns the total lengths and, per
    class, the (T,) pinned token ids (-1 where free)."""
    names = list(task.label_names)
    segments = [{c: {"target": [split_pair(t)[k] for t in pool[c]["target"]]} for c in pool} for k in (0, 1)]
    firsts = text_lengths(segments[0], tokenizer, seq_len, names)
    seconds = text_lengths(segments[1], tokenizer, second_seq_len, names)
    pinned = {c: pair_pinned(task.template, tokenizer, firsts[c], seconds[c]) for c in pool}
    return {c: len(p) for c, p in pinned.items()}, pinned


def _targets_at(model, tokenizer, matched, task, pool, label_tokens, args, shard) -> dict[int, ClassTarget]:
    """Every class's target under one checkpoint's ``model`` (clipped per example under DP)."""
    clip = args.dp_clip_norm if args.dp_epsilon > 0 else 0.0
    return {
        c: class_target(
            model,
            tokenizer,
            matched,
            [task.format_prompt(t) for t in pool[c]["target"]],
            label_tokens[c],
            args.target_batch_size,
            shard=shard,
            clip_norm=clip,
        )
        for c in range(task.num_labels)
    }


def _common(targets: dict[int, ClassTarget], matched: MatchedModules) -> ClassTarget:
    """The classes' mean target C (``target_centering='common'`` matches G - C to G_c - C)."""
    n = len(targets)
    return ClassTarget([sum(t.tensors[i] for t in targets.values()) / n for i in range(len(matched.parameters()))], 0)


def class_objectives(
    checkpoints: list[Checkpoint],
    model,
    matched: MatchedModules,
    tokenizer,
    task: TaskSpec,
    pool: dict,
    label_tokens: list[int],
    args,
    noise: torch.Generator | None,
    shard: tuple[int, int],
) -> tuple[Parts, dict | None, dict | None]:
    """The objectives of every class at every checkpoint, and under DP (``args.dp_epsilon > 0``,
    noise drawn from ``noise``) the public DP report and the local statistics of the clean targets."""
    lead_ids, tail_ids = template_parts(task.template, tokenizer)
    dp = args.dp_epsilon > 0
    dp_report, dp_local = None, ({"note": DP_LOCAL_NOTE, "per_checkpoint": {}} if dp else None)
    parts: Parts = {c: [] for c in range(task.num_labels)}
    for checkpoint in checkpoints:
        with checkpoint.active() as at:
            matched_at = matched if at is model else prepare_matched(at, args.matched_params)
            targets = _targets_at(at, tokenizer, matched_at, task, pool, label_tokens, args, shard)
            if dp:  # the noisy targets are all that the rest of the run reads from the real data
                row_dim = matched_at.parameters()[0].shape[1] if matched_at.is_lm_head else None
                targets, report, local = privatise(targets, args, noise, len(checkpoints), row_dim)
                dp_report = dp_report or report
                dp_local["per_checkpoint"][checkpoint.name] = {task.label_names[c]: v for c, v in local.items()}
            targets = control_targets(targets, args.target_control, args.seed)  # "off": unchanged
            common = _common(targets, matched_at) if args.target_centering == "common" else None
            for c in targets:
                objective = MatchingObjective(
                    at, matched_at, targets[c], label_tokens[c], lead_ids, tail_ids, args.distance, common
                )
                parts[c].append((checkpoint, objective))
    return parts, dp_report, dp_local


def class_target_cosine(parts: Parts, checkpoints: list[Checkpoint]) -> dict[str, float | None]:
    """Per checkpoint, the mean cosine over pairs of class targets (1 = the same direction): the class signal."""
    out = {}
    for k, checkpoint in enumerate(checkpoints):
        flat = [torch.cat([t.float().reshape(-1) for t in parts[c][k][1].targets]) for c in parts]
        pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))]
        cosines = [float(torch.nn.functional.cosine_similarity(flat[i], flat[j], dim=0)) for i, j in pairs]
        out[checkpoint.name] = sum(cosines) / len(pairs) if pairs else None
    return out
