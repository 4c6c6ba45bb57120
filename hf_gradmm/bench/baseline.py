"""The round as hf_gradmm 0.1.0 ran it, for ``hf-gradmm bench round --baseline``.

The same search as the engine's (the same beams, draws, candidates and acceptance rule, so the
same texts up to float rounding), computed the way it was before the engine kept per-row state:
the beam choice runs the whole batch again beside each row's beams, every candidate swap is
scored by running the whole current batch beside the 24 candidates, the LM log-probabilities of
every position are recomputed at every refinement step, and each NLL check runs all B rows.
Kept only to time the engine against; a synthesis never runs it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hf_gradmm.engine.objective import MatchingObjective, Objective
from hf_gradmm.engine.refine import draw_swaps, proposals
from hf_gradmm.engine.round import Progress, RoundArgs, RoundParts, RoundSetup, project_point
from hf_gradmm.engine.rows import Rows
from hf_gradmm.engine.stages import stage
from hf_gradmm.lm import position_logprobs, token_logprobs


def _swap_values(objective: Objective, ids: Tensor, at: Tensor, new_ids: Tensor) -> Tensor:
    """Distances of the batches with row ``at[k]`` replaced by ``new_ids[k]``, each from full passes."""
    if not isinstance(objective, MatchingObjective):  # a trajectory: the weighted sum over checkpoints
        total = None
        for checkpoint, part in objective.parts:
            with checkpoint.active():
                values = _swap_values(part, ids, at, new_ids)
            total = checkpoint.weight * values if total is None else total + checkpoint.weight * values
        return total
    if not objective.matched.is_lm_head:
        out = []
        for r, new in zip(at.tolist(), new_ids):
            trial = ids.clone()
            trial[r] = new
            out.append(objective.value(trial))
        return torch.tensor(out)
    with torch.no_grad():
        a, h = objective.factors(objective.embed(ids), create_graph=False)
        a_new, h_new = objective.factors(objective.embed(new_ids), create_graph=False)
        values = []
        for k, r in enumerate(at.tolist()):
            a_k, h_k = a.clone(), h.clone()
            a_k[r], h_k[r] = a_new[k], h_new[k]
            values.append(objective.distance_from_factors(a_k, h_k))
        return torch.stack(values).float()


def z_step(
    setup: RoundSetup, args: RoundArgs, label: int, point: Tensor, on_progress: Progress | None = None
) -> tuple[Tensor, Rows]:
    """The 0.1.0 z-step: each row's beam choice runs the whole batch again."""
    objective = setup.objectives[label]
    beams = project_point(setup, args, label, point)
    ids = beams[:, 0].clone()
    with stage("beam_choice"):
        for row in range(len(ids)) if args.projection_beams > 1 else ():
            values = _swap_values(objective, ids, torch.full((beams.shape[1],), row), beams[row])
            ids[row] = beams[row, int(values.argmin())]
            if on_progress is not None:
                on_progress("beam_choice", row + 1, len(ids))
    with stage("z_distance"):  # 0.1.0 scored the chosen batch with one more full pass
        return ids, objective.rows(ids)


def refine(
    setup: RoundSetup,
    args: RoundArgs,
    label: int,
    ids: Tensor,
    rows: Rows,
    generator: torch.Generator,
    on_progress: Progress | None,
    candidates_per_position: int = 4,
    swaps_per_step: int = 24,
    lm_weight: float = 0.5,
) -> tuple[Tensor, float]:
    """The 0.1.0 token-swap refinement (``rows`` unused: it kept no per-row state)."""
    objective, model, prefix = setup.objectives[label], setup.model, setup.prefix_ids[label]
    emb = model.get_input_embeddings().weight.detach().float()
    ids, allowed = ids.to(emb.device).clone(), setup.allowed.to(emb.device)
    with stage("refine_accept"):
        current, grad = objective.value_and_grad(ids)
        base_nll = -token_logprobs(model, prefix, ids).mean().item()
    for step in range(args.refine_steps):
        with torch.no_grad(), stage("refine_scoring"):
            logprobs = position_logprobs(model, prefix, ids)
            pool = proposals(grad, emb, ids, allowed, logprobs, candidates_per_position, lm_weight)
            seq, new_ids = draw_swaps(ids, pool, swaps_per_step, generator)
        with torch.no_grad(), stage("refine_candidates"):
            values = _swap_values(objective, ids, seq, new_ids)
        with stage("refine_accept"):
            for k in values.argsort().tolist():
                if values[k] >= current:
                    break
                trial = ids.clone()
                trial[seq[k]] = new_ids[k]
                if -token_logprobs(model, prefix, trial).mean().item() <= base_nll + args.max_nll_increase:
                    ids = trial
                    current, grad = objective.value_and_grad(ids)
                    break
        if on_progress is not None:
            on_progress("refine", step + 1, args.refine_steps)
    return ids, current


BASELINE = RoundParts(z_step=z_step, refine=refine)
