"""One ADMM round of GRADMM, as a function: init -> (z-step, x-step, dual step) x outer -> refine.

B synthetic sequences of one class are optimised jointly over their input embeddings X:

    minimise  f(X) = distance(grad of the B texts, G_c)   subject to  X = E[Z], Z real tokens

    1. z-step  Z = Proj(X + L/rho)                    (projection.py: top-k, LM-reranked, beams)
    2. x-step  inner Adam steps on f(X) + rho/2 ||X - E[Z] + L/rho||^2 (+ lm_coeff * NLL(Z | X))
    3. dual    L = L + rho (X - E[Z])

The round keeps the projected batch with the lowest matching distance, refines it by token swaps
(refine.py) and returns a :class:`RoundRecord`. Pure torch: no files, no logging; the caller
gets each outer iteration's figures through ``on_iteration`` and finer progress through
``on_progress``. Each stage is timed under its name (stages.py) when a caller records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from hf_gradmm.engine.objective import Objective
from hf_gradmm.engine.projection import project
from hf_gradmm.engine.refine import swap_refine
from hf_gradmm.engine.rows import Rows, concat_rows
from hf_gradmm.engine.select import CoverageGroups, JointChooser, margin_shortlist, select_batch
from hf_gradmm.engine.stages import stage
from hf_gradmm.lm import decode_texts, pinned_span, sample_texts, text_ids, token_logprobs
from hf_gradmm.tasks.registry import split_pair

# on_progress(stage, step, steps): a round's fine-grained progress (x-step inner steps, projections,
# refinement steps), so that a progress bar never sits still for a whole stage.
Progress = Callable[[str, int, int], None]


@dataclass
class RoundRecord:
    """What a finished round wrote to disk."""

    round: int
    label: int
    token_ids: list[list[int]]
    texts: list[str]
    initial_distance: float  # batch distance of the projected init
    admm_distance: float  # batch distance of the best projected ADMM iterate (before any refinement)
    final_distance: float  # batch distance of the kept batch (after refine_steps token swaps, if any)
    per_text_distance: list[float]
    nll: list[float]
    best_iteration: int
    seconds: float
    stopped_early: str | None = None
    x_step_seconds: float = 0.0  # mean wall time of one inner x-step
    scorer_distance: float | None = None  # select_scorer: the chosen batch's distance under the scorer


class RoundArgs(Protocol):
    """The settings a round reads (all fields of :class:`hf_gradmm.GradMatchConfig`)."""

    seed: int
    outer_steps: int
    inner_steps: int
    lr: float
    rho: float
    grad_clip: float
    lm_coeff: float
    topk: int
    projection: str
    projection_guidance: float
    projection_beams: int
    refine_steps: int
    max_nll_increase: float
    refine_gradients: str
    init: str
    init_temperature: float
    init_candidates: int
    select_pool: int
    select_margin_keep: int
    select_scorer_share: float
    coverage_weight: float
    keep_prefix: bool


@dataclass
class RoundSetup:
    """What every round of a run reads, computed once before the first (targets/setup.py)."""

    model: nn.Module
    tokenizer: object
    allowed: Tensor  # boolean mask of the tokens a text may use
    embed_norm: float  # mean norm of the allowed tokens' embeddings (scale of the random init)
    start_ids: Tensor  # context of a text's NLL
    prefix_ids: dict[int, Tensor]  # per class: the LM prefix of the projection and the LM init
    seq_lens: dict[int, int]  # per class: free tokens per text
    objectives: dict[int, Objective]  # per class: f
    label_names: list[str]
    pool: dict[int, dict[str, list[str]]]  # per class: real 'target' and 'heldout' texts (init 'real' reads them)
    # per class, a pair task's fixed positions: (T,) the middle template token at each, -1 where free; {}: none
    pinned: dict[int, Tensor]
    coverage: dict[int, CoverageGroups]  # per class, the real examples' gradient groups; {}: coverage off
    # (texts, their class) -> each text's label margin under the run's few-shot classifier; None: not asked
    label_margins: Callable[[list[str], int], Tensor] | None
    # (texts, their class) -> another model's objective for the class and the texts' Rows under it, which
    # then choose the selection's batch (select_scorer, targets/scorer.py); None: the model's own objective
    scorer: Callable[[list[str], int], tuple[Objective, Rows]] | None


@dataclass(frozen=True)
class RoundParts:
    """The z-step and the refinement a round runs, each with the signature of this module's own."""

    z_step: Callable[..., tuple[Tensor, Rows]]
    refine: Callable[..., tuple[Tensor, float]]


def round_generator(seed: int, round_idx: int) -> torch.Generator:
    """The round's own CPU generator: the same draws on any device and in any process."""
    return torch.Generator().manual_seed(seed * 100_003 + round_idx)


def initial_point(
    setup: RoundSetup, args: RoundArgs, label: int, batch: int, gen: torch.Generator
) -> tuple[Tensor, Tensor | None, float | None]:
    """Initial X and, for the 'lm' and 'select' inits that start from tokens, those tokens (the first Z);
    with a scorer (select_scorer), the chosen batch's distance under it."""
    objective, model = setup.objectives[label], setup.model
    length = setup.seq_lens[label]
    emb = model.get_input_embeddings().weight.detach()
    pinned = setup.pinned.get(label)
    if args.init in ("lm", "select"):
        drawn = batch if args.init == "lm" else args.select_pool
        prefix = setup.prefix_ids[label]
        ids = sample_texts(model, prefix, setup.allowed, drawn, length, gen, args.init_temperature, pinned)
        if args.init != "select":
            return objective.embed(ids).clone(), ids, None
        if args.select_margin_keep:  # the plainest texts of the class first, then the match among them
            margins = setup.label_margins(_texts(setup, args, label, ids), label)
            ids = ids[margin_shortlist(margins, args.select_margin_keep)]
        if setup.scorer is None:
            chooser, pool = objective, objective.rows(ids, cache=False)
        else:  # another model's gradients choose among the texts
            scorer, scored_rows = setup.scorer(_texts(setup, args, label, ids), label)
            chooser, pool = scorer, scored_rows
            if args.select_scorer_share < 1:  # the model's own distance shares the choice
                own = objective.rows(ids, cache=False)
                chooser, pool = JointChooser.balanced(objective, own, scorer, pool, args.select_scorer_share, batch)
        chosen = select_batch(chooser, pool, batch, coverage=setup.coverage.get(label), weight=args.coverage_weight)
        scored = scorer.rows_value(scored_rows.take(chosen)) if setup.scorer is not None else None
        return objective.embed(ids[chosen]).clone(), ids[chosen], scored
    if args.init == "real":
        ids_list = [real_ids(setup.tokenizer, t, length, pinned) for t in setup.pool[label]["target"]]
        ids = torch.tensor(ids_list, dtype=torch.long, device=emb.device)
        per_text = objective.per_text(ids)
        order = sorted(range(len(per_text)), key=per_text.__getitem__)[:batch]
        chosen = ids[order]
        if len(order) < batch:  # fewer real targets than B: repeat the closest ones
            chosen = chosen.repeat(math.ceil(batch / len(order)), 1)[:batch]
        return objective.embed(chosen).clone(), None, None  # projected, so real texts are not copied verbatim
    best, best_x = float("inf"), None
    for _ in range(args.init_candidates):
        x = torch.randn(batch, length, emb.shape[1], generator=gen).to(emb.device)  # same draw on any device
        x = (x / x.norm(dim=-1, keepdim=True) * setup.embed_norm).to(emb.dtype)
        if pinned is not None:  # a pair's middle template tokens are themselves from the start
            x[:, pinned >= 0] = objective.embed(pinned[pinned >= 0]).to(x.device, x.dtype)
        value = objective.value_embeds(x)
        if value < best:
            best, best_x = value, x
    return best_x, None, None


def real_ids(tokenizer, text: str, length: int, pinned: Tensor | None = None) -> list[int]:
    """A real text's token ids cut (or repeated) to ``length``; a pair's two segments each to its own
    free span around the ``pinned`` middle tokens."""

    def fit(ids: list[int], n: int) -> list[int]:
        return (ids * math.ceil(n / max(len(ids), 1)))[:n]

    if pinned is None:
        return fit(text_ids(tokenizer, text), length)
    start, end = pinned_span(pinned)
    first, second = split_pair(text)
    middle = pinned[start:end].tolist()
    return fit(text_ids(tokenizer, first), start) + middle + fit(text_ids(tokenizer, second), length - end)


def project_point(setup: RoundSetup, args: RoundArgs, label: int, point: Tensor) -> Tensor:
    """The projection's beams (B, W, T) for ``point``, best beam first (engine/projection.py)."""
    guided = args.projection == "guided"
    with stage("projection"):
        grad = setup.objectives[label].value_and_grad_embeds(point)[1] if guided else None
        beams, _ = project(
            setup.model,
            point.detach(),
            setup.allowed,
            setup.prefix_ids[label],
            args.topk,
            guidance=args.projection_guidance if guided else 0.0,
            point_grad=grad,
            beams=args.projection_beams,
            pinned=setup.pinned.get(label),
        )
    return beams


def z_step(
    setup: RoundSetup, args: RoundArgs, label: int, point: Tensor, on_progress: Progress | None = None
) -> tuple[Tensor, Rows]:
    """Project ``point`` onto token ids; with beams, each row keeps the beam that gives its batch
    the lowest exact matching distance (one pass of coordinate descent over the rows). Returns
    the ids and their :class:`Rows` (what their distance and the refinement read)."""
    objective = setup.objectives[label]
    beams = project_point(setup, args, label, point)
    batch, width, _ = beams.shape
    ids = beams[:, 0].clone()
    with stage("beam_choice"):  # the best beams in full, the others from where they leave them
        rows = objective.rows(ids)
        if width > 1:
            of_row = torch.arange(batch).repeat_interleave(width - 1)
            alternatives = objective.rows_from(rows, of_row, beams[:, 1:].reshape(batch * (width - 1), -1))
        for row in range(batch) if width > 1 else ():  # all beams are likely texts under the LM
            others = alternatives.take(slice(row * (width - 1), (row + 1) * (width - 1)))
            options = concat_rows([rows.take(slice(row, row + 1)), others])  # the kept beam first: wins ties
            pick = int(objective.swap_values(rows, torch.full((width,), row), options).argmin())
            ids[row] = beams[row, pick]
            rows = rows.put(torch.tensor([row]), options.take(slice(pick, pick + 1)))
            if on_progress is not None:
                on_progress("beam_choice", row + 1, batch)
    return ids, rows


def x_step(
    objective: Objective,
    x: Tensor,
    optimizer: torch.optim.Optimizer,
    z_ids: Tensor,
    z_emb: Tensor,
    dual: Tensor,
    args: RoundArgs,
    on_progress: Progress | None = None,
    frozen: Tensor | None = None,
) -> tuple[int, Tensor, float | None]:
    """``inner_steps`` Adam steps on the augmented Lagrangian; returns the steps run, the last f
    and, when f became non-finite (the steps stop there), its value. ``frozen`` (T,) bool: positions
    that never move (a pair's middle template tokens; their gradient is zeroed, so Adam leaves them)."""
    f = torch.zeros(())
    for step in range(args.inner_steps):
        if on_progress is not None:
            on_progress("x_step", step, args.inner_steps)
        optimizer.zero_grad(set_to_none=True)
        f, nll = objective.distance(x, need_grad=True, z_ids=z_ids if args.lm_coeff else None)
        penalty = (x - z_emb + dual / args.rho).float().pow(2).sum()
        loss = f + args.rho / 2 * penalty + args.lm_coeff * nll
        if not torch.isfinite(loss):
            return step + 1, f, float(f.detach())
        loss.backward()
        if frozen is not None:
            x.grad[:, frozen] = 0
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_([x], args.grad_clip)
        optimizer.step()
    return args.inner_steps, f, None


def run_round(
    setup: RoundSetup,
    args: RoundArgs,
    round_idx: int,
    label: int,
    batch: int,
    on_iteration: Callable[[int, dict], None] | None = None,
    on_progress: Progress | None = None,
    parts: RoundParts | None = None,
) -> RoundRecord:
    """One round of ``batch`` texts of class ``label``; ``on_iteration(it, figures)`` after each
    finished outer iteration (the projected batch's distance, the best so far, f of X, ||X - E[Z]||),
    ``on_progress(stage, step, steps)`` within the stages. ``parts``: the z-step and refinement
    to run (default: :func:`z_step` and :func:`refine`; a benchmark passes older versions)."""
    parts = parts or RoundParts(z_step, refine)
    objective, start = setup.objectives[label], time.perf_counter()
    gen = round_generator(args.seed, round_idx)
    with stage("init"):
        x, z_ids, scorer_distance = initial_point(setup, args, label, batch, gen)
    x = x.detach().requires_grad_(True)
    dual, optimizer, frozen = torch.zeros_like(x), torch.optim.Adam([x], lr=args.lr), _frozen(setup, label)
    if z_ids is None:  # a continuous init is projected; token inits are their own first Z
        z_ids, z_rows = parts.z_step(setup, args, label, x, on_progress)
    else:
        with stage("z_distance"):
            z_rows = objective.rows(z_ids)
    with stage("z_distance"):
        best_ids, best_rows, best_value, best_it = z_ids, z_rows, objective.rows_value(z_rows), 0
    initial = value = best_value
    stopped, x_seconds, x_steps = None, 0.0, 0
    for it in range(args.outer_steps):
        if it > 0:  # z-step (iteration 0 uses the projected init)
            if on_progress is not None:
                on_progress("projection", it, args.outer_steps)
            z_ids, z_rows = parts.z_step(setup, args, label, x.detach() + dual / args.rho, on_progress)
            with stage("z_distance"):
                value = objective.rows_value(z_rows)
            if value < best_value:
                best_ids, best_rows, best_value, best_it = z_ids, z_rows, value, it
        z_emb = objective.embed(z_ids)
        x_start = time.perf_counter()
        with stage("x_step"):
            steps, f, bad = x_step(objective, x, optimizer, z_ids, z_emb, dual, args, on_progress, frozen)
            if x.is_cuda:  # GPU work is asynchronous: time the x-steps to their end
                torch.cuda.synchronize(x.device)
        x_steps += steps
        x_seconds += time.perf_counter() - x_start
        if bad is not None:
            stopped = (
                f"round {round_idx} ({setup.label_names[label]}) stopped at outer iteration {it}: the matching "
                f"distance became non-finite ({bad}); lower --lr or --rho. The round keeps its best projected "
                f"batch (iteration {best_it}, distance {best_value:.4f})."
            )
            break
        with torch.no_grad():  # dual step
            dual += args.rho * (x.detach() - z_emb)
        if on_iteration is not None:
            residual = float((x.detach() - z_emb).float().norm())
            figures = {"match_distance": value, "best_distance": best_value, "x_distance": float(f.detach())}
            on_iteration(it, {"outer_iteration": it, **figures, "primal_residual": residual})
    admm_value = best_value
    if args.refine_steps:
        best_ids, best_value = parts.refine(setup, args, label, best_ids, best_rows, gen, on_progress)
    with stage("record"):
        return RoundRecord(
            round=round_idx,
            label=label,
            token_ids=best_ids.tolist(),
            texts=_texts(setup, args, label, best_ids),
            initial_distance=initial,
            admm_distance=admm_value,
            final_distance=best_value,
            per_text_distance=objective.per_text(best_ids),
            nll=(-token_logprobs(setup.model, setup.start_ids, best_ids).mean(dim=1)).tolist(),
            best_iteration=best_it,
            seconds=time.perf_counter() - start,
            stopped_early=stopped,
            x_step_seconds=x_seconds / max(x_steps, 1),
            scorer_distance=scorer_distance,
        )


def _frozen(setup: RoundSetup, label: int) -> Tensor | None:
    """The positions the x-step must not move (a pair's middle template tokens), or None."""
    return None if label not in setup.pinned else setup.pinned[label] >= 0


def refine(
    setup: RoundSetup,
    args: RoundArgs,
    label: int,
    ids: Tensor,
    rows: Rows,
    gen: torch.Generator,
    on_progress: Progress | None,
) -> tuple[Tensor, float]:
    """``refine_steps`` token-swap steps on the kept batch (refine.py); the round's generator draws the swaps."""
    on_step = None if on_progress is None else lambda step, _value: on_progress("refine", step + 1, args.refine_steps)
    return swap_refine(
        ids,
        rows,
        setup.objectives[label],
        setup.model,
        setup.prefix_ids[label],
        setup.allowed,
        args.refine_steps,
        gen,
        max_nll_increase=args.max_nll_increase,
        on_step=on_step,
        pinned=setup.pinned.get(label),
        gradients=args.refine_gradients,
    )


def _texts(setup: RoundSetup, args: RoundArgs, label: int, ids: Tensor) -> list[str]:
    """The decoded texts (a pair: its two free spans; the middle tokens are the template's)."""
    texts = decode_texts(setup.tokenizer, ids, setup.pinned.get(label))
    if args.keep_prefix:
        prefix = setup.tokenizer.decode(setup.prefix_ids[label][0], skip_special_tokens=True)
        texts = [prefix + (" " if label in setup.pinned else "") + t for t in texts]
    return [t.strip() for t in texts]
