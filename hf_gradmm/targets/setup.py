"""Everything a synthesis computes once, before its first round: :func:`prepare`.

The matched parameters, the real pool, the target checkpoints (a short fine-tuning for
``trajectory:K``), every class's objective at every checkpoint (noised under DP), the allowed
vocabulary, the LM prefixes and the text lengths. The result, :class:`Prepared`, is the
engine's :class:`~hf_gradmm.engine.round.RoundSetup` plus what the reports need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset

from hf_gradmm.engine.gradients import MatchedModules, prepare_matched
from hf_gradmm.engine.objective import Checkpoint, TrajectoryObjective
from hf_gradmm.engine.projection import allowed_vocabulary
from hf_gradmm.engine.round import RoundSetup
from hf_gradmm.lm import embedding_scale, filter_margins, start_ids
from hf_gradmm.targets.coverage import coverage_groups
from hf_gradmm.targets.pool import (
    Parts,
    class_objectives,
    class_target_cosine,
    context_length,
    fit_context,
    pair_layout,
    real_pool,
    text_lengths,
)
from hf_gradmm.targets.trajectory import load_checkpoints
from hf_gradmm.tasks import TaskSpec, label_token_ids


@dataclass
class Prepared(RoundSetup):
    """A run's set-up: what the rounds read, and what the metrics and the calibration report read."""

    task: TaskSpec
    label_tokens: list[int]
    matched: MatchedModules
    checkpoints: list[Checkpoint]
    parts: Parts
    checkpoint_report: dict
    dp_report: dict | None  # public: the card shows it
    dp_local: dict | None  # statistics of the private data: never published
    target_seconds: float


def prepare(
    model,
    tokenizer,
    task: TaskSpec,
    args,
    source: Dataset | None,
    trajectory_dir: Path,
    noise: torch.Generator | None = None,
    shard: tuple[int, int] = (0, 1),
    scorer=None,
) -> Prepared:
    """Set up a run of ``args`` (a :class:`~hf_gradmm.GradMatchConfig`) on ``model``, which must be
    on its device and frozen for matching here (the caller restores it). ``source``: the real split
    the pool is drawn from; ``trajectory_dir``: where trajectory:K checkpoints are saved (and reused);
    ``noise``: the DP noise generator; ``shard``: (rank, processes); ``scorer``: another model's
    choice of the selection's batch (targets/scorer.py), None for the model's own."""
    label_tokens = label_token_ids(task, tokenizer)
    matched = prepare_matched(model, args.matched_params)
    pool = real_pool(source, task, args.target_examples, args.heldout_examples, args.seed, args.real_split)
    pool = fit_context(pool, tokenizer, task, context_length(model, tokenizer))  # warns when it cuts
    if task.is_pair:  # before the long work
        seq_lens, pinned = pair_layout(pool, tokenizer, task, args.seq_len, args.second_seq_len)
    else:
        seq_lens, pinned = text_lengths(pool, tokenizer, args.seq_len, list(task.label_names)), {}
    emb = model.get_input_embeddings().weight.detach()
    allowed = allowed_vocabulary(tokenizer, emb.shape[0], args.vocab_filter).to(emb.device)
    start = time.perf_counter()
    checkpoints, report = load_checkpoints(model, tokenizer, task, pool, args, trajectory_dir)
    parts, dp_report, dp_local = class_objectives(
        checkpoints, model, matched, tokenizer, task, pool, label_tokens, args, noise, shard
    )
    report["class_target_cosine"] = class_target_cosine(parts, checkpoints)
    if len(checkpoints) == 1 and checkpoints[0].model is model:
        objectives = {c: p[0][1] for c, p in parts.items()}
    else:
        objectives = {c: TrajectoryObjective(p, model.get_input_embeddings()) for c, p in parts.items()}
    coverage = {}
    if args.coverage_weight > 0:  # theta0 only (config.py): the given model
        groups = args.texts_per_round
        coverage = coverage_groups(
            model, tokenizer, task, pool, label_tokens, groups, args.target_batch_size, args.seed
        )
    return Prepared(
        model=model,
        tokenizer=tokenizer,
        allowed=allowed,
        embed_norm=float(emb[allowed].float().norm(dim=-1).mean()) * embedding_scale(model),
        start_ids=start_ids(tokenizer),
        prefix_ids={c: start_ids(tokenizer, task.class_prefix(c, args.projection_prefix)) for c in parts},
        seq_lens=seq_lens,
        pinned=pinned,
        coverage=coverage,
        label_margins=margin_scorer(model, tokenizer, task) if args.select_margin_keep else None,
        scorer=scorer,
        objectives=objectives,
        label_names=list(task.label_names),
        pool=pool,
        task=task,
        label_tokens=label_tokens,
        matched=matched,
        checkpoints=checkpoints,
        parts=parts,
        checkpoint_report=report,
        dp_report=dp_report,
        dp_local=dp_local,
        target_seconds=time.perf_counter() - start,
    )


def margin_scorer(model, tokenizer, task: TaskSpec):
    """``(texts, label) -> margins``: each text's label margin under the builder's default label filter
    (the task's hand-written demonstrations, its instruction, contextual calibration), so the
    selection's shortlist favours the texts the builder would keep; nothing private is read."""

    def score(texts: list[str], label: int) -> torch.Tensor:
        return filter_margins(model, tokenizer, task, texts, [label] * len(texts))

    return score
