"""Per-row state of a batch: what lets a swapped batch be scored without re-running its other rows.

The matching distance of a batch couples its rows only through a few per-row quantities (for
the lm_head closed form, each text's ``a`` and ``h``), and a transformer runs each row on its
own. So a round keeps, per text, those factors and its keys and values (:class:`Rows`), and the
objective (objective.py) scores any batch made by swapping rows from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Rows:
    """Per-row state of a batch (row = first dimension of every tensor), kept so that a batch with
    some rows swapped is scored without running the rows that stay.

    ``factors`` is what the distance needs: ``(a, h)`` of each text for the lm_head closed form
    (the distance of any set of rows is then a few B x V products), nothing for other matched
    parameters (a swapped batch is scored by a full pass of its ids). ``cache`` holds the rows'
    keys and values, so that a row that differs only from some position on is run only from
    there (engine/suffix.py). ``parts``: a trajectory's Rows, one per checkpoint.
    """

    ids: Tensor
    factors: tuple[Tensor, ...] = ()
    cache: Tensor | None = None
    parts: tuple[Rows, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: Tensor | slice | list[int]) -> Rows:
        return Rows(
            self.ids[index],
            tuple(t[index] for t in self.factors),
            None if self.cache is None else self.cache[index],
            tuple(p.take(index) for p in self.parts),
        )

    def put(self, at: Tensor, new: Rows, cache: bool = True) -> Rows:
        """A copy with row ``at[k]`` replaced by row k of ``new`` (without the caches unless ``cache``)."""

        def swap(t: Tensor, n: Tensor) -> Tensor:
            t = t.clone()
            t[at] = n
            return t

        keep = cache and self.cache is not None and new.cache is not None
        return Rows(
            swap(self.ids, new.ids),
            tuple(swap(t, n) for t, n in zip(self.factors, new.factors)),
            swap(self.cache, new.cache) if keep else None,
            tuple(p.put(at, n, cache) for p, n in zip(self.parts, new.parts)),
        )


def concat_rows(parts: list[Rows]) -> Rows:
    """The rows of several :class:`Rows` in order, as one."""
    first = parts[0]
    return Rows(
        torch.cat([p.ids for p in parts]),
        tuple(torch.cat(ts) for ts in zip(*(p.factors for p in parts))),
        None if any(p.cache is None for p in parts) else torch.cat([p.cache for p in parts]),
        tuple(concat_rows(list(ps)) for ps in zip(*(p.parts for p in parts))) if first.parts else (),
    )


def swapped_values(objective, rows: Rows, at: Tensor, new: Rows) -> Tensor:
    """Distances of the batches ``rows`` with row ``at[k]`` replaced by row k of ``new``."""
    values = [
        objective.rows_value(rows.put(at[k : k + 1], new.take(slice(k, k + 1)), cache=False)) for k in range(len(at))
    ]
    return torch.tensor(values, dtype=torch.float32)


def first_change(ids: Tensor, base: Tensor) -> Tensor:
    """Per row, the first position where ``ids`` differs from ``base`` (the length where none does)."""
    differs = ids != base
    none = torch.full_like(differs[:, 0], ids.shape[1], dtype=torch.long)
    return torch.where(differs.any(1), differs.int().argmax(1), none)
