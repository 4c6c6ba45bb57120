"""Selection from a candidate pool: the B of M whole LM-written texts whose batch matches best.

The LM writes M texts from the class prefix (the 'lm' init's sampler), each is run once, and B
of them are chosen by the round's exact objective (any :class:`~hf_gradmm.engine.objective.Objective`:
one checkpoint or a trajectory). The choice is coordinate descent over the batch's B slots: for
a slot, every unchosen candidate is tried in its place at once (``swap_values``: for the lm_head
closed form one (B + M) x V x d product, nothing V x d per text), the best kept; passes repeat
until no slot changes. Every chosen text is one the LM wrote, token for token: readable by
construction, and exact in its reported distance. ``init='select'`` starts a round from the
choice; with ``schedule='none'`` the choice is the round's output.

A margin shortlist (``select_margin_keep > 0``): before the choice, only the candidates the
generator, as a few-shot classifier, reads most plainly as their own class stay (the largest
label margins, :func:`hf_gradmm.lm.label_margins`); the batch is then chosen among them by the
objective. Kept at B it is the control: the B plainest texts, no matching at all.

Two models choosing together (``select_scorer_share`` below 1, :class:`JointChooser`): the batch
minimises a weighted sum of the generator's own distance and another model's (targets/scorer.py),
each divided by its value at the choice's start, so that one set is chosen for both models.

Coverage (``coverage_weight > 0``): the class's real examples are cut into B groups of similar
gradients (targets/coverage.py), slot j of the batch is scored by the batch distance plus the
weight times its text's distance to group j's mean gradient, so the batch matches the class
while each text stands for one of its modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hf_gradmm.engine.rows import Rows


@dataclass(frozen=True)
class CoverageGroups:
    """A class's real target examples in B groups: each example's lm_head factors (its gradient is
    ``a h^T``) and its group (targets/coverage.py builds it)."""

    a: Tensor  # (n, V)
    h: Tensor  # (n, d)
    group: Tensor  # (n,) group of each example, 0 .. B - 1

    @property
    def count(self) -> int:
        return int(self.group.max()) + 1

    def distances(self, a: Tensor, h: Tensor) -> Tensor:
        """(M, B): 1 - cosine between each text's gradient ``a_i h_i^T`` and each group's mean gradient,
        closed form (nothing V x d is formed): ``<a h^T, A^T H> = (A a) . (H h)``."""
        onehot = F.one_hot(self.group).float()  # (n, B)
        sizes = onehot.sum(0)
        ra, rh = self.a.float(), self.h.float()
        dots = ((a.float() @ ra.T) * (h.float() @ rh.T)) @ onehot / sizes  # <g_i, G_j>
        gram = (ra @ ra.T) * (rh @ rh.T)
        group_sq = (onehot * (gram @ onehot)).sum(0) / sizes**2  # ||G_j||^2
        norms = a.float().norm(dim=1) * h.float().norm(dim=1)
        return 1 - dots / (norms[:, None] * group_sq.sqrt()[None]).clamp_min(1e-30)


@dataclass(frozen=True)
class JointChooser:
    """Two objectives choosing one batch: ``w0 * d0 + w1 * d1`` over the same candidates, each as its
    own model reads them. Its :class:`Rows` hold one part per objective (``Rows.take``/``put`` carry
    both), so :func:`select_batch` uses it as it uses one objective."""

    objectives: tuple  # (Objective, Objective)
    weights: tuple[float, float]

    @classmethod
    def balanced(cls, first, first_rows: Rows, second, second_rows: Rows, share: float, batch: int):
        """``(chooser, rows)`` for ``(1 - share) * d0 / d0(start) + share * d1 / d1(start)``, where the start
        is the choice's first batch (the first ``batch`` candidates): each model's distance in units of
        where the choice begins, so neither model's scale decides."""
        start = slice(0, batch)
        scales = (first.rows_value(first_rows.take(start)), second.rows_value(second_rows.take(start)))
        weights = ((1 - share) / max(scales[0], 1e-12), share / max(scales[1], 1e-12))
        return cls((first, second), weights), Rows(first_rows.ids, parts=(first_rows, second_rows))

    def rows_value(self, rows: Rows) -> float:
        return sum(w * o.rows_value(r) for o, w, r in zip(self.objectives, self.weights, rows.parts))

    def swap_values(self, rows: Rows, at: Tensor, new: Rows) -> Tensor:
        parts = zip(self.objectives, self.weights, rows.parts, new.parts)
        return sum(w * o.swap_values(r, at, n).double().cpu() for o, w, r, n in parts)


def margin_shortlist(margins: Tensor, keep: int) -> Tensor:
    """Indices of the ``keep`` candidates with the largest label ``margins`` (M,), in draw order
    (so the selection's start, the first B, stays an unbiased draw among them)."""
    if keep > len(margins):
        raise ValueError(f"select_margin_keep ({keep}) is more than the {len(margins)} candidates: lower it.")
    return margins.topk(keep).indices.sort().values


def select_batch(
    objective,
    pool: Rows,
    batch: int,
    passes: int = 4,
    coverage: CoverageGroups | None = None,
    weight: float = 0.0,
) -> Tensor:
    """Indices into ``pool`` (the M candidates' :class:`Rows` under ``objective``: ``objective.rows(ids,
    cache=False)`` for the model's own draws, ``objective.prompt_rows(...)`` for texts scored by
    another model) of the ``batch`` texts chosen.

    Starts from the first ``batch`` candidates (the sampler's draws are exchangeable), then
    at most ``passes`` sweeps over the slots; a sweep without a change ends it early. With
    ``coverage`` (B groups), slot j's choice minimises the batch distance plus ``weight`` times the
    text's distance to group j (:meth:`CoverageGroups.distances`).
    """
    if len(pool) < batch:
        raise ValueError(
            f"select_pool ({len(pool)}) must be at least texts_per_round ({batch}): a batch is chosen from it."
        )
    if coverage is not None and coverage.count != batch:
        raise ValueError(f"{coverage.count} coverage groups for a batch of {batch}: a slot stands for one group.")
    costs = weight * coverage.distances(*pool.factors).cpu() if coverage is not None else None
    chosen = torch.arange(batch)
    rows = pool.take(chosen)
    for _ in range(passes):
        changed = False
        for slot in range(batch):
            values = objective.swap_values(rows, torch.full((len(pool),), slot), pool)  # a new tensor
            if costs is not None:
                values = values + costs[:, slot]
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
