"""Selection from a candidate pool: the B of M whole LM-written texts whose batch matches best.

The LM writes M texts from the class prefix (the 'lm' init's sampler), each is run once, and B
of them are chosen by the round's exact objective (any :class:`~hf_gradmm.engine.objective.Objective`:
one checkpoint or a trajectory). The choice is coordinate descent over the batch's B slots: for
a slot, every unchosen candidate is tried in its place at once (``swap_values``: for the lm_head
closed form one (B + M) x V x d product, nothing V x d per text), the best kept; passes repeat
until no slot changes. Every chosen text is one the LM wrote, token for token: readable by
construction, and exact in its reported distance. ``init='select'`` starts a round from the
choice; with ``schedule='none'`` the choice is the round's output.
"""

from __future__ import annotations

import torch
from torch import Tensor


def select_batch(objective, candidates: Tensor, batch: int, passes: int = 4) -> Tensor:
    """Indices into ``candidates`` (M, T) of the ``batch`` texts chosen.

    Starts from the first ``batch`` candidates (the sampler's draws are exchangeable), then
    at most ``passes`` sweeps over the slots; a sweep without a change ends it early.
    """
    if len(candidates) < batch:
        raise ValueError(
            f"select_pool ({len(candidates)}) must be at least texts_per_round ({batch}): a batch is chosen from it."
        )
    pool = objective.rows(candidates, cache=False)
    chosen = torch.arange(batch)
    rows = pool.take(chosen)
    for _ in range(passes):
        changed = False
        for slot in range(batch):
            values = objective.swap_values(rows, torch.full((len(candidates),), slot), pool)  # a new tensor
            taken = chosen[torch.arange(batch) != slot]
            values[taken] = float("inf")  # a text appears once; the slot's own text stays a choice
            pick = int(values.argmin())
            if pick != int(chosen[slot]):
                chosen[slot] = pick
                rows = rows.put(torch.tensor([slot]), pool.take([pick]), cache=False)
                changed = True
        if not changed:
            break
    return chosen
