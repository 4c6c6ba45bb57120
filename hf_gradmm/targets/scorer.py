"""Another model chooses the batch (``select_scorer``): texts one model writes, another's gradients pick.

The selection (engine/select.py) keeps the B of the generator's draws whose batch gradient best
matches the class target. By default that gradient and that target are the generator's own. On
Rotten Tomatoes the sets chosen by SmolLM2's gradients trained SmolLM2 better than its unchosen
texts, and trained Gemma-3-270M no better (docs/results.md): what matches one model's target
need not match another's. With ``select_scorer`` the choice is made by the model the data is
for: its own real-pool targets (the same checkpoints, ``trajectory:4/4`` fine-tuning that
model), and each candidate text scored as that model reads it, retokenised in the task's
prompt (:meth:`~hf_gradmm.engine.objective.MatchingObjective.prompt_rows`, the lm_head closed
form). The generator still writes every text and its margin shortlist; nothing is edited.
With ``select_scorer_share`` below 1 the two models choose together (engine/select.py's
:class:`~hf_gradmm.engine.select.JointChooser`): one set meant for both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset

from hf_gradmm.engine.objective import Objective
from hf_gradmm.engine.rows import Rows
from hf_gradmm.lm import encode_texts
from hf_gradmm.targets.setup import Prepared, prepare
from hf_gradmm.tasks import TaskSpec

Scorer = Callable[[list[str], int], tuple[Objective, Rows]]


def check_scorer(args) -> None:
    """Refuse a ``select_scorer`` the run cannot use, naming the fix (from the config's checks,
    before any model loads; under DP it is one of targets/privacy.py's leaking options)."""
    if not args.select_scorer:
        if args.select_scorer_share < 1:
            raise ValueError(
                f"--select-scorer-share {args.select_scorer_share} shares the choice with a scorer, and there is none: "
                "name one with --select-scorer MODEL (e.g. gemma3-270m), or leave --select-scorer-share at 1."
            )
        return
    problems = []
    if args.init != "select":
        problems.append(f"it chooses the selection's batch, so it needs --init select (got {args.init!r})")
    if args.outer_steps:
        problems.append(
            f"the ADMM steps after the choice ({args.outer_steps} outer steps) would match the generator's own "
            "gradient again: use --schedule none"
        )
    if args.matched_params != "lm_head":
        problems.append("it scores texts of another tokenizer by the lm_head closed form: use --matched-params lm_head")
    if args.coverage_weight > 0:
        problems.append("the coverage groups are the generator's gradients: use --coverage-weight 0")
    entries = [e.strip() for e in args.target_checkpoints.split(",") if e.strip()]
    others = [e for e in entries if e != "theta0" and not e.startswith("trajectory:")]
    if others:
        problems.append(
            f"target_checkpoints {others} are checkpoints of the generator, not of the scorer: use theta0 or "
            "trajectory:K (the scorer then fine-tunes itself)"
        )
    if problems:
        raise ValueError(f"--select-scorer {args.select_scorer} is refused: " + "; ".join(problems) + ".")


def scorer_args(args):
    """The run's config as the scorer's set-up reads it: the same pool, checkpoints and distance,
    without the generator-only parts (its shortlist and the scorer itself)."""
    return dataclasses.replace(args, select_scorer="", select_scorer_share=1.0, select_margin_keep=0)


def text_scorer(
    model,
    tokenizer,
    task: TaskSpec,
    args,
    source: Dataset | None,
    trajectory_dir: Path,
    shard: tuple[int, int] = (0, 1),
) -> tuple[Scorer, Prepared]:
    """``(texts, label) -> (objective, rows)``: the scorer ``model``'s objective for the class and the
    texts' :class:`Rows` under it, each text in the task's prompt as ``tokenizer`` encodes it; and
    the scorer's own set-up (its targets' report). ``model`` must be on its device and frozen;
    its trajectory checkpoints are saved in (and reused from) ``trajectory_dir``."""
    prepared = prepare(model, tokenizer, task, scorer_args(args), source, trajectory_dir, shard=shard)

    def score(texts: list[str], label: int) -> tuple[Objective, Rows]:
        objective = prepared.objectives[label]
        return objective, objective.prompt_rows(encode_texts(tokenizer, task, texts))

    return score, prepared
