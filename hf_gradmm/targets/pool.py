"""The real pool and the class targets built from it.

Per class, a seeded draw of ``target_examples`` real texts (their mean gradient is the class
target) and ``heldout_examples`` more (the calibration report's held-out texts). The targets are
computed at every target checkpoint, clipped and noised under differential privacy, optionally
centred on the classes' mean, and wrapped in one :class:`MatchingObjective` per (checkpoint,
class): the only place a synthesis reads the real data.
"""

from __future__ import annotations

import random

import torch
from datasets import Dataset

from hf_gradmm.engine.gradients import ClassTarget, MatchedModules, class_target, prepare_matched
from hf_gradmm.engine.objective import Checkpoint, MatchingObjective, template_parts
from hf_gradmm.lm import text_ids
from hf_gradmm.targets.controls import control_targets
from hf_gradmm.targets.privacy import DP_LOCAL_NOTE, privatise
from hf_gradmm.tasks import TaskSpec

# parts[c]: one (checkpoint, that checkpoint's objective for class c) per target checkpoint
Parts = dict[int, list[tuple[Checkpoint, MatchingObjective]]]


def real_pool(
    source: Dataset | None, task: TaskSpec, target_examples: int, heldout_examples: int, seed: int, split: str = "train"
) -> dict[int, dict[str, list[str]]]:
    """Per class: the ``target`` texts (their mean gradient is the class target) and ``heldout``
    texts (calibration), a seeded draw from ``source``; the evaluation harness and the audit reuse it."""
    if source is None or len(source) == 0:
        raise ValueError(f"The real {split} split is empty; give a dataset with examples.")
    need = target_examples + heldout_examples
    rng = random.Random(seed)
    pool = {}
    labels = source["label"]
    texts = source["text"]
    for c, name in enumerate(task.label_names):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        if not idx:
            raise ValueError(f"Class {name!r} has no example in the real {split} split.")
        if len(idx) < need:
            raise ValueError(
                f"Class {name!r} has {len(idx)} examples in the real {split} split, fewer than "
                f"target_examples + heldout_examples = {target_examples} + {heldout_examples}. "
                "Lower --target-examples / --heldout-examples or use a larger split."
            )
        rng.shuffle(idx)
        pool[c] = {
            "target": [texts[i] for i in idx[:target_examples]],
            "heldout": [texts[i] for i in idx[target_examples:need]],
        }
    return pool


def text_lengths(pool: dict, tokenizer, seq_len: int) -> dict[int, int]:
    """Free tokens per text, per class: ``seq_len``, or (0) the mean token length of the class's
    target examples, as the reference code does."""
    if seq_len:
        return {c: seq_len for c in pool}
    lengths = {c: [len(text_ids(tokenizer, t)) for t in pool[c]["target"]] for c in pool}
    return {c: max(2, round(sum(n) / len(n))) for c, n in lengths.items()}


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
