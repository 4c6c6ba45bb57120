"""Token-swap refinement after ADMM: the discrete counterpart of the guided projection.

Greedy coordinate search on token ids (GCG style): swaps proposed by the first-order decrease of
the matching distance, mixed with the LM's log-probability, and accepted only when the exact
distance falls and the batch's NLL stays within a bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from hf_gradmm.engine.projection import zscore
from hf_gradmm.engine.stages import stage
from hf_gradmm.lm import position_logprobs, token_logprobs


class SwapObjective(Protocol):
    """What :func:`swap_refine` needs from the matching objective."""

    def value_and_grad(self, ids: Tensor) -> tuple[float, Tensor]:
        """Distance of the batch ``ids`` (B, T) and its gradient w.r.t. their embeddings (B, T, d)."""

    def swap_values(self, ids: Tensor, rows: Tensor, new_rows: Tensor) -> Tensor:
        """Distances of the batches obtained by replacing row ``rows[k]`` of ``ids`` by ``new_rows[k]``."""


def swap_refine(
    ids: Tensor,
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
) -> tuple[Tensor, float]:
    """Greedy coordinate search on token ids (GCG style), accepting only exact improvements.

    Each step takes the gradient ``g`` of the matching distance at ``E[ids]``, scores
    (position, allowed token) pairs by the z-scored first-order decrease
    ``-g_t . (e_v - e_{z_t})`` mixed with the z-scored LM log-probability of ``v`` in its left
    context (weight ``lm_weight``), draws ``swaps_per_step`` single-token swaps from the best
    ``candidates_per_position`` per position, evaluates them exactly, and keeps the best that
    lowers the distance while the batch's mean NLL stays within ``max_nll_increase`` nats of
    where it started. Returns the ids and their distance.
    """
    emb = model.get_input_embeddings().weight.detach().float()
    device = emb.device
    ids, allowed = ids.to(device).clone(), allowed.to(device)
    batch, length = ids.shape
    with stage("refine_accept"):  # exact value and gradient of the start, and its NLL
        current, grad = objective.value_and_grad(ids)
        base_nll = -token_logprobs(model, prefix_ids, ids).mean().item()
    rows_idx, pos_idx = torch.arange(batch, device=device)[:, None], torch.arange(length, device=device)[None, :]
    for step in range(steps):
        with torch.no_grad(), stage("refine_scoring"):
            g = grad.float()
            gain = -(g @ emb.T) + (g * emb[ids]).sum(-1, keepdim=True)  # (B, T, V)
            gain[..., ~allowed] = -float("inf")
            gain[rows_idx, pos_idx, ids] = -float("inf")
            top_gain, top_ids = gain.topk(candidates_per_position * 4, dim=-1)
            score = top_gain
            if lm_weight:
                lp = position_logprobs(model, prefix_ids, ids).gather(2, top_ids)
                score = (1 - lm_weight) * zscore(top_gain) + lm_weight * zscore(lp)
            pool = top_ids.gather(2, score.topk(candidates_per_position, dim=-1).indices)  # (B, T, c)
            # drawn with the (CPU) generator, then moved: the same swaps on any device
            seq = torch.randint(batch, (swaps_per_step,), generator=generator).to(device)
            pos = torch.randint(length, (swaps_per_step,), generator=generator).to(device)
            pick = torch.randint(candidates_per_position, (swaps_per_step,), generator=generator).to(device)
            new_rows = ids[seq].clone()
            new_rows[torch.arange(swaps_per_step, device=device), pos] = pool[seq, pos, pick]
        with torch.no_grad(), stage("refine_candidates"):
            values = objective.swap_values(ids, seq, new_rows)
        with stage("refine_accept"):
            for k in values.argsort().tolist():
                if values[k] >= current:
                    break
                trial = ids.clone()
                trial[seq[k]] = new_rows[k]
                if -token_logprobs(model, prefix_ids, trial).mean().item() <= base_nll + max_nll_increase:
                    ids = trial
                    current, grad = objective.value_and_grad(ids)
                    break
        if on_step is not None:
            on_step(step, current)
    return ids, current
