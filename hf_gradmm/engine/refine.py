"""Token-swap refinement after ADMM: the discrete counterpart of the guided projection.

Greedy coordinate search on token ids (GCG style): swaps proposed by the first-order decrease of
the matching distance, mixed with the LM's log-probability, and accepted only when the exact
distance falls and the batch's NLL stays within a bound. Nothing that did not change is run
again: the rows' factors, keys and values (:class:`~hf_gradmm.engine.rows.Rows`) and their
LM log-probabilities are kept, a candidate is run only from its swapped position on, and the NLL
check and the log-probability update run the one changed row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from hf_gradmm.engine.projection import zscore
from hf_gradmm.engine.rows import Rows
from hf_gradmm.engine.stages import stage
from hf_gradmm.lm import position_logprobs


class SwapObjective(Protocol):
    """What :func:`swap_refine` needs from the matching objective."""

    def value_and_grad(self, ids: Tensor) -> tuple[float, Tensor]:
        """Distance of the batch ``ids`` (B, T) and its gradient w.r.t. their embeddings (B, T, d)."""

    def rows_from(self, base: Rows, at: Tensor, ids: Tensor) -> Rows:
        """:class:`Rows` of ``ids``, row k a change of row ``at[k]`` of ``base``."""

    def swap_values(self, rows: Rows, at: Tensor, new: Rows) -> Tensor:
        """Distances of the batches with row ``at[k]`` replaced by row k of ``new``."""

    def row_grad(self, rows: Rows, row: int) -> Tensor:
        """Gradient (1, T, d) of the batch distance w.r.t. row ``row``'s embeddings, the others held."""


def swap_refine(
    ids: Tensor,
    rows: Rows,
    objective: SwapObjective,
    model: nn.Module,
    prefix_ids: Tensor,
    allowed: Tensor,
    steps: int,
    generator: torch.Generator,
    candidates_per_position: int = 4,
    swaps_per_step: int = 24,
    lm_weight: float = 0.5,
    max_nll_increase: float = 1.0,
    on_step: Callable[[int, float], None] | None = None,
    pinned: Tensor | None = None,
    gradients: str = "exact",
) -> tuple[Tensor, float]:
    """Greedy coordinate search on token ids (GCG style), accepting only exact improvements.

    ``rows`` are the :class:`Rows` of ``ids``. Each step takes the gradient ``g`` of the matching
    distance at ``E[ids]``, scores (position, allowed token) pairs by the z-scored first-order
    decrease ``-g_t . (e_v - e_{z_t})`` mixed with the z-scored LM log-probability of ``v`` in its
    left context (weight ``lm_weight``), draws ``swaps_per_step`` single-token swaps from the best
    ``candidates_per_position`` per position, evaluates them exactly, and keeps the best that
    lowers the distance while the batch's mean NLL stays within ``max_nll_increase`` nats of
    where it started. Positions ``pinned`` to a token (>= 0: a pair's middle template tokens) are
    never swapped. Returns the ids and their distance.

    ``gradients``: after an accepted swap, ``"exact"`` recomputes the gradient of every row (a swap
    in one row changes them all; a forward and backward of the whole batch), ``"changed"`` only the
    swapped row's, with the others held (one row's pass), keeping the other rows' proposals; the
    whole batch's is recomputed when a step finds no improving swap. Either way every accepted
    distance is exact: the proposals are stale, not the values.
    """
    emb = model.get_input_embeddings().weight.detach().float()
    ids, allowed = ids.to(emb.device).clone(), allowed.to(emb.device)
    batch = len(ids)
    free = None if pinned is None else (pinned < 0).nonzero().flatten().to(emb.device)
    with stage("refine_accept"):  # exact value and gradient of the start; its LM log-probabilities
        current, grad = objective.value_and_grad(ids)
        logprobs = position_logprobs(model, prefix_ids, ids)  # (B, T, V), updated per changed row
        row_nll = _row_nll(logprobs, ids)
        bound = row_nll.mean().item() + max_nll_increase
    pool, stale = None, False
    for step in range(steps):
        with torch.no_grad(), stage("refine_scoring"):
            if pool is None:  # the proposals change only when the batch does
                pool = proposals(grad, emb, ids, allowed, logprobs, candidates_per_position, lm_weight)
            seq, new_ids = draw_swaps(ids, pool, swaps_per_step, generator, free)
        with torch.no_grad(), stage("refine_candidates"):  # the candidates alone, each from its swap on
            new_rows = objective.rows_from(rows, seq, new_ids)
            values = objective.swap_values(rows, seq, new_rows)
        with stage("refine_accept"):
            kept = None
            for k in values.argsort().tolist():
                if values[k] >= current:
                    break
                row, lp = int(seq[k]), position_logprobs(model, prefix_ids, new_ids[k : k + 1])
                nll = _row_nll(lp, new_ids[k : k + 1])
                if (row_nll.sum() - row_nll[row] + nll).item() / batch <= bound:
                    ids[row], logprobs[row], row_nll[row], kept = new_ids[k], lp[0], nll[0], row
                    rows = rows.put(seq[k : k + 1], new_rows.take(slice(k, k + 1)))
                    current = float(values[k])
                    break
            if kept is not None and gradients == "exact":
                current, grad = objective.value_and_grad(ids)  # exact, and the next proposals'
                pool = None
            elif kept is not None:  # the changed row's gradient (the others held) and its proposals anew
                grad[kept], stale = objective.row_grad(rows, kept)[0], True
                one = slice(kept, kept + 1)
                pool[kept] = proposals(
                    grad[one], emb, ids[one], allowed, logprobs[one], candidates_per_position, lm_weight
                )[0]
            elif stale:  # nothing kept from stale proposals: draw the next from exact gradients
                current, grad = objective.value_and_grad(ids)
                pool, stale = None, False
        if on_step is not None:
            on_step(step, current)
    return ids, current


def draw_swaps(
    ids: Tensor, pool: Tensor, count: int, generator: torch.Generator, free: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``count`` single-token swaps drawn from the proposals ``pool`` (B, T, c) at the ``free``
    positions (default: all): the rows they change and the new rows. Drawn with the (CPU)
    generator, then moved: the same swaps on any device."""
    batch, length, per_position = pool.shape
    device = ids.device
    seq = torch.randint(batch, (count,), generator=generator).to(device)
    pos = torch.randint(length if free is None else len(free), (count,), generator=generator).to(device)
    pos = pos if free is None else free[pos]
    pick = torch.randint(per_position, (count,), generator=generator).to(device)
    new_ids = ids[seq].clone()
    new_ids[torch.arange(count, device=device), pos] = pool[seq, pos, pick]
    return seq, new_ids


def _row_nll(logprobs: Tensor, ids: Tensor) -> Tensor:
    """Mean NLL of each row of ``ids`` from its position log-probabilities (B, T, V) -> (B,)."""
    return -logprobs.gather(2, ids[..., None]).squeeze(-1).mean(dim=1)


def proposals(
    grad: Tensor, emb: Tensor, ids: Tensor, allowed: Tensor, logprobs: Tensor, per_position: int, lm_weight: float
) -> Tensor:
    """The ``per_position`` best swaps (B, T, c) by first-order gain mixed with LM log-probability."""
    batch, length = ids.shape
    g = grad.float()
    gain = -(g @ emb.T) + (g * emb[ids]).sum(-1, keepdim=True)  # (B, T, V)
    gain[..., ~allowed] = -float("inf")
    rows_idx = torch.arange(batch, device=ids.device)[:, None]
    gain[rows_idx, torch.arange(length, device=ids.device)[None, :], ids] = -float("inf")
    top_gain, top_ids = gain.topk(per_position * 4, dim=-1)
    score = top_gain
    if lm_weight:
        score = (1 - lm_weight) * zscore(top_gain) + lm_weight * zscore(logprobs.gather(2, top_ids))
    return top_ids.gather(2, score.topk(per_position, dim=-1).indices)
