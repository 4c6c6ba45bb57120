"""The matching objective of one class: f(X) = distance(grad of B synthetic texts, class target).

A synthetic sequence is ``lead + X + tail``: ``lead`` is the tokenizer's start token(s) and
the template's text before ``{text}``, ``tail`` the template's text after it (``" It was"``);
both are fixed embeddings, only the free positions X move. For a sentence pair, X is
``segment 1 + middle + segment 2``: the template's middle tokens are positions of X that the
round pins to their tokens. Every sequence carries the class's
label token at its last position. Token ids are scored through their embeddings, so a
projected text and the continuous iterate are measured the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hf_gradmm.engine.gradients import (
    ClassTarget,
    MatchedModules,
    last_hidden,
    lm_head_example_factors,
    output_factors,
)
from hf_gradmm.engine.rows import Rows, first_change, swapped_values
from hf_gradmm.engine.suffix import hidden_and_cache, suffix_hidden, suffix_matches
from hf_gradmm.lm import text_ids

DISTANCES = ("cos", "l2", "l1+l2")

# ---------------------------------------------------------------------------------------------
# Distances between a batch gradient and a target
# ---------------------------------------------------------------------------------------------


def lm_head_distance(
    a: Tensor, h: Tensor, target: Tensor, kind: str = "cos", target_norm=None, offset: Tensor | None = None
) -> Tensor:
    """Distance between the batch gradient ``A^T H / B`` and ``target`` (V x d), closed form.

    ``a`` holds per-example ``dL_i/dz_i`` (gradient of a summed loss). ``cos``: 1 - cosine;
    ``l2``: squared Euclidean distance; ``l1+l2``: L1 + squared L2 (needs the explicit V x d
    gradient once per call). ``offset`` C (target centering) is subtracted from the batch
    gradient; the caller passes an already centred target.
    """
    if kind not in DISTANCES:
        raise ValueError(f"Unknown distance {kind!r}; choose one of {DISTANCES}.")
    a = a.to(target.dtype)
    h = h.to(target.dtype)
    batch = a.shape[0]
    if kind == "l1+l2":
        diff = a.T @ h / batch - target - (0 if offset is None else offset)
        return diff.abs().sum() + diff.pow(2).sum()
    dot = (a * (h @ target.T)).sum() / batch  # (1/B) sum_i a_i . (G h_i)
    sq_norm = ((a @ a.T) * (h @ h.T)).sum() / batch**2
    if offset is not None:  # <g - C, T> and ||g - C||^2
        dot = dot - (offset * target).sum()
        sq_norm = sq_norm - 2 * (a * (h @ offset.T)).sum() / batch + offset.pow(2).sum()
    t_norm = target.norm() if target_norm is None else target_norm
    if kind == "cos":
        return 1 - dot / (sq_norm.clamp_min(1e-30).sqrt() * t_norm)
    return sq_norm - 2 * dot + t_norm**2


def flat_distance(grads: Sequence[Tensor], targets: Sequence[Tensor], kind: str = "cos") -> Tensor:
    """Distance between two parameter gradients given as lists of tensors (flattened together)."""
    if kind not in DISTANCES:
        raise ValueError(f"Unknown distance {kind!r}; choose one of {DISTANCES}.")
    g = torch.cat([x.reshape(-1) for x in grads]).float()
    t = torch.cat([x.reshape(-1) for x in targets]).float()
    if kind == "cos":
        return 1 - F.cosine_similarity(g, t, dim=0)
    diff = g - t
    sq = diff.pow(2).sum()
    return sq if kind == "l2" else diff.abs().sum() + sq


def template_parts(template: str, tokenizer) -> tuple[Tensor, Tensor]:
    """Token ids before and after the free text: start token(s) + template head, and template tail.
    A pair template's free text is both segments with the middle between them (:func:`middle_ids`)."""
    if "{text1}" in template:
        head, tail = template.split("{text1}", 1)[0], template.split("{text2}", 1)[1]
    else:
        head, tail = template.split("{text}", 1)
    # "Review: {text}": the space before the slot belongs to the text's first token (" When"), as in
    # the real prompts, not to a token of its own
    lead = tokenizer(head.rstrip(" "), add_special_tokens=True)["input_ids"]
    tail_ids = text_ids(tokenizer, tail)
    return torch.tensor(lead, dtype=torch.long), torch.tensor(tail_ids, dtype=torch.long)


def middle_ids(template: str, tokenizer) -> list[int]:
    """A pair template's fixed tokens between ``{text1}`` and ``{text2}`` (``"\nReview B:"``); they sit
    inside the free positions, pinned (engine/round.py)."""
    middle = template.split("{text1}", 1)[1].split("{text2}", 1)[0]
    return text_ids(tokenizer, middle.rstrip(" "))  # the space before {text2} goes with its first token


def pair_pinned(template: str, tokenizer, first: int, second: int) -> Tensor:
    """A pair's free positions as (T,) token ids: ``first`` free (-1), the template's middle tokens
    (:func:`middle_ids`, pinned), ``second`` free."""
    return torch.tensor([-1] * first + middle_ids(template, tokenizer) + [-1] * second, dtype=torch.long)


class MatchingObjective:
    """f for one class, on embeddings (differentiable) or token ids."""

    def __init__(
        self,
        model: nn.Module,
        matched: MatchedModules,
        target: ClassTarget,
        label_token: int,
        lead_ids: Tensor,
        tail_ids: Tensor,
        kind: str = "cos",
        common: ClassTarget | None = None,
    ):
        self.model = model
        self.matched = matched
        self.kind = kind
        self.label_token = label_token
        self.embedding = model.get_input_embeddings()
        self.device = self.embedding.weight.device  # token ids and labels are made here
        with torch.no_grad():
            self.lead = self.embedding(lead_ids.to(self.device))[None]
            self.tail = self.embedding(tail_ids.to(self.device))[None]
        dtype = next(model.parameters()).dtype
        # Centering: match (g - C) to (G - C); without it, offsets is None and the targets are G.
        self.offsets = [c.to(dtype) for c in common.tensors] if common is not None else None
        self.targets = [t.to(dtype) for t in target.tensors]
        if self.offsets:
            self.targets = [t - o for t, o in zip(self.targets, self.offsets)]
        self.target_norm = torch.sqrt(sum(t.float().pow(2).sum() for t in self.targets)).to(dtype)
        self.suffix_ok: bool | None = None  # whether suffix passes reproduce full ones here (checked once)
        self._offsets_cached: tuple[float, float] | None = None

    # -- sequences -------------------------------------------------------------------------------
    def inputs(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        return torch.cat([self.lead.expand(batch, -1, -1), x, self.tail.expand(batch, -1, -1)], dim=1)

    def embed(self, ids: Tensor) -> Tensor:
        with torch.no_grad():
            return self.embedding(ids.to(self.device))

    def _labels(self, batch: int) -> Tensor:
        return torch.full((batch,), self.label_token, dtype=torch.long, device=self.device)

    # -- lm_head closed form -------------------------------------------------------------------
    def factors(self, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        """``(a, h)`` of the batch; differentiable w.r.t. ``x`` when ``create_graph``."""
        h = last_hidden(self.model, inputs_embeds=self.inputs(x))
        a, _ = output_factors(self.model, h, self._labels(x.shape[0]))
        return a, h

    def distance_from_factors(self, a: Tensor, h: Tensor) -> Tensor:
        offset = self.offsets[0] if self.offsets else None
        return lm_head_distance(a, h, self.targets[0], self.kind, self.target_norm, offset)

    # -- general ----------------------------------------------------------------------------------
    def distance(self, x: Tensor, need_grad: bool = True, z_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(f, nll)`` of the batch ``x`` (B, T, d). ``nll``: mean NLL of ``z_ids`` given ``x``
        (the optional LM term of the x-step), zero when ``z_ids`` is None."""
        labels = self._labels(x.shape[0])
        full_logits = z_ids is not None or not self.matched.is_lm_head
        out = last_hidden(self.model, inputs_embeds=self.inputs(x), return_logits=full_logits)
        h, logits = out if full_logits else (out, None)
        nll = torch.zeros((), device=x.device)
        if z_ids is not None:
            z_ids = z_ids.to(x.device)
            start = self.lead.shape[1]
            pred = logits[:, start : start + z_ids.shape[1] - 1, :].float()
            nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), z_ids[:, 1:].reshape(-1))
        if self.matched.is_lm_head:
            a, _ = output_factors(self.model, h, labels)
            return self.distance_from_factors(a, h), nll
        loss = F.cross_entropy(logits[:, -1, :].float(), labels)
        grads = torch.autograd.grad(loss, self.matched.parameters(), create_graph=need_grad)
        if self.offsets:
            grads = [g - o for g, o in zip(grads, self.offsets)]
        return flat_distance(grads, self.targets, self.kind), nll

    def value(self, ids: Tensor) -> float:
        """Distance of a batch of token ids (B, T)."""
        return self.value_embeds(self.embed(ids))

    def value_embeds(self, x: Tensor) -> float:
        """Distance of a batch of embeddings, without a graph w.r.t. ``x``."""
        if self.matched.is_lm_head:
            with torch.no_grad():
                return float(self.distance(x, need_grad=False)[0])
        with torch.enable_grad():  # the general path differentiates w.r.t. the matched parameters
            return float(self.distance(x.detach(), need_grad=False)[0].detach())

    def value_and_grad(self, ids: Tensor) -> tuple[float, Tensor]:
        """Distance of ``ids`` and its gradient w.r.t. their embeddings (for guided moves)."""
        return self.value_and_grad_embeds(self.embed(ids))

    def value_and_grad_embeds(self, x: Tensor) -> tuple[float, Tensor]:
        x = x.detach().clone().requires_grad_(True)
        f, _ = self.distance(x, need_grad=True)
        (grad,) = torch.autograd.grad(f, x)
        return float(f.detach()), grad

    def row_grad(self, rows: Rows, row: int) -> Tensor:
        """Gradient (1, T, d) of the batch distance w.r.t. the embeddings of row ``row`` alone, the
        other rows held at their kept factors: one row's forward and backward instead of the batch's
        (what the refinement needs after a swap changed that row; engine/refine.py)."""
        if not self.matched.is_lm_head or not rows.factors:
            return self.value_and_grad(rows.ids)[1][row : row + 1]
        x = self.embed(rows.ids[row : row + 1]).clone().requires_grad_(True)
        a_row, h_row = self.factors(x, create_graph=True)
        kept = zip(rows.factors, (a_row, h_row))
        a, h = (torch.cat([t[:row].detach(), new, t[row + 1 :].detach()]) for t, new in kept)
        (grad,) = torch.autograd.grad(self.distance_from_factors(a, h), x)
        return grad

    def prompts_value(self, batch: dict[str, Tensor]) -> float:
        """Distance of a batch of tokenised prompts of any lengths (left-padded ``input_ids`` and
        ``attention_mask``, :func:`hf_gradmm.lm.encode_prompts`): real texts, held-out or chosen."""
        if self.matched.is_lm_head:
            return self.rows_value(self.prompt_rows(batch))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        labels = self._labels(len(batch["input_ids"]))
        with torch.enable_grad():  # the mean gradient of the batch, as the class target is a mean
            logits = self.model(**batch, logits_to_keep=1, use_cache=False).logits[:, -1, :].float()
            grads = torch.autograd.grad(F.cross_entropy(logits, labels), self.matched.parameters())
        if self.offsets:
            grads = [g - o for g, o in zip(grads, self.offsets)]
        return float(flat_distance(grads, self.targets, self.kind))

    def prompt_rows(self, batch: dict[str, Tensor]) -> Rows:
        """:class:`Rows` of tokenised prompts of any lengths (left-padded, as for :meth:`prompts_value`):
        each text's lm_head factors, so that any batch of them is scored in closed form. What lets
        texts another model wrote be chosen by this model's gradients (targets/scorer.py); ``ids``
        holds their padded input ids."""
        if not self.matched.is_lm_head:
            raise ValueError("Scoring tokenised prompts by rows needs matched_params='lm_head' (the closed form).")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        a, h = lm_head_example_factors(self.model, batch, self._labels(len(batch["input_ids"])))
        return Rows(batch["input_ids"], (a.detach(), h.detach()))

    def per_text(self, ids: Tensor) -> list[float]:
        """Each text's own distance to the target (a batch of one)."""
        if self.matched.is_lm_head:
            with torch.no_grad():
                a, h = self.factors(self.embed(ids), create_graph=False)
                return [float(self.distance_from_factors(a[i : i + 1], h[i : i + 1])) for i in range(len(ids))]
        return [self.value(ids[i : i + 1]) for i in range(len(ids))]

    # -- rows: swapped batches scored without re-running the rows that stay ----------------------
    def rows(self, ids: Tensor, cache: bool = True) -> Rows:
        """:class:`Rows` of the batch ``ids`` (one forward pass for the closed form); without
        ``cache`` the keys and values are not kept (a pool of candidates only needs the factors)."""
        ids = ids.to(self.device)
        if not self.matched.is_lm_head:
            return Rows(ids)
        if not cache:
            with torch.no_grad():
                return Rows(ids, self.factors(self.embed(ids), create_graph=False))
        h, cache = hidden_and_cache(self.model, self.inputs(self.embed(ids)))
        a, _ = output_factors(self.model, h, self._labels(len(ids)))
        return Rows(ids, (a, h), cache)

    def rows_from(self, base: Rows, at: Tensor, ids: Tensor) -> Rows:
        """:class:`Rows` of ``ids``, where row k differs from row ``at[k]`` of ``base`` only from
        some position on: the model runs from there (engine/suffix.py), once it has shown on
        this model that it gives what a full pass gives."""
        ids = ids.to(self.device)
        if base.cache is None or self.suffix_ok is False:
            return self.rows(ids)
        lead = self.lead.shape[1]
        starts = (first_change(ids, base.ids[at]) + lead).clamp_max(lead + ids.shape[1] + self.tail.shape[1] - 1)
        embeds = self.inputs(self.embed(ids))
        h, cache = suffix_hidden(self.model, base.cache, at, starts, embeds)
        if self.suffix_ok is None:  # checked once, on two rows
            self.suffix_ok = suffix_matches(self.model, embeds[:2], h[:2])
            if not self.suffix_ok:
                warnings.warn(
                    f"{type(self.model).__name__}: a pass over changed positions only (cached keys, a 4D mask) does "
                    "not reproduce a full pass on this model; rows are run in full (same results, slower).",
                    stacklevel=2,
                )
                return self.rows(ids)
        a, _ = output_factors(self.model, h, self._labels(len(ids)))
        return Rows(ids, (a, h), cache)

    def rows_value(self, rows: Rows) -> float:
        """Exact distance of the batch ``rows`` describes."""
        if not self.matched.is_lm_head:
            return self.value(rows.ids)
        with torch.no_grad():
            return float(self.distance_from_factors(*rows.factors))

    def swap_values(self, rows: Rows, at: Tensor, new: Rows) -> Tensor:
        """Distances of the batches with row ``at[k]`` replaced by row k of ``new``."""
        if not self.matched.is_lm_head or self.kind == "l1+l2":
            return swapped_values(self, rows, at, new)
        with torch.no_grad():
            return self._swap_closed_form(rows, at.to(self.device), new)

    def _offset_products(self) -> tuple[float, float]:
        """``<C, T>`` and ``||C||^2`` of the centring offset, computed once."""
        if self._offsets_cached is None:
            offset, target = self.offsets[0].float(), self.targets[0].float()
            self._offsets_cached = (float((offset * target).sum()), float(offset.pow(2).sum()))
        return self._offsets_cached

    def _swap_closed_form(self, rows: Rows, at: Tensor, new: Rows) -> Tensor:
        """:func:`lm_head_distance` of every swapped batch at once: a swap changes one term of
        ``<g, G>`` and one row and column of the Gram products, so all K cost one (B + K) x V x d
        product instead of K batch distances."""
        (a, h), (a_new, h_new) = rows.factors, new.factors
        target, batch = self.targets[0], len(a)
        both_h = torch.cat([h, h_new])
        proj = (both_h.to(target.dtype) @ target.T).float()  # G h for every row
        a, a_new, both_h = a.float(), a_new.float(), both_h.float()
        terms = (torch.cat([a, a_new]) * proj).sum(-1)  # a_i . G h_i
        gram_a, gram_h = a @ a.T, both_h[:batch] @ both_h[:batch].T
        cross_a, cross_h = a_new @ a.T, h_new.float() @ both_h[:batch].T  # (K, B)
        own = (a_new * a_new).sum(-1) * (h_new.float() * h_new.float()).sum(-1)
        cross_a[torch.arange(len(at), device=at.device), at] = 0.0  # the replaced row's own pair is ``own``
        sq = (gram_a * gram_h).sum() - 2 * (gram_a[at] * gram_h[at]).sum(-1) + gram_a[at, at] * gram_h[at, at]
        sq = (sq + 2 * (cross_a * cross_h).sum(-1) + own) / batch**2
        dot = (terms[:batch].sum() - terms[at] + terms[batch:]) / batch
        if self.offsets:  # centred: <g - C, T> and ||g - C||^2
            offset = self.offsets[0]
            off = (torch.cat([a, a_new]) * (both_h.to(offset.dtype) @ offset.T).float()).sum(-1)
            offset_dot, offset_sq = self._offset_products()
            dot = dot - offset_dot
            sq = sq - 2 * (off[:batch].sum() - off[at] + off[batch:]) / batch + offset_sq
        t_norm = self.target_norm.float()
        if self.kind == "cos":
            return (1 - dot / (sq.clamp_min(1e-30).sqrt() * t_norm)).cpu()
        return (sq - 2 * dot + t_norm**2).cpu()


# ---------------------------------------------------------------------------------------------
# Several checkpoints: f = sum_k w_k f_k
# ---------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """One point of the trajectory: a model (shared by LoRA checkpoints) and the adapter to switch on."""

    name: str
    model: nn.Module
    weight: float
    adapter: str | None = None

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        if self.adapter is not None:
            self.model.set_adapter(self.adapter, inference_mode=True)  # frozen: no adapter gradients
        yield self.model


class TrajectoryObjective:
    """``f = sum_k w_k f_k``: the :class:`MatchingObjective` interface over several checkpoints.

    Each part is scored with its checkpoint active. The continuous iterate X lives in the
    embedding space of the model as given (``embed``); token ids are embedded by each checkpoint
    itself, so a projected text is scored exactly at every checkpoint.
    """

    def __init__(self, parts: list[tuple[Checkpoint, MatchingObjective]], embedding: nn.Module):
        self.parts = parts
        self.embedding = embedding

    def _each(self, call, per_part=None) -> list:
        """``call(objective[, per_part[k]])`` for every checkpoint, with that checkpoint active."""
        out = []
        for k, (checkpoint, objective) in enumerate(self.parts):
            with checkpoint.active():
                out.append(call(objective) if per_part is None else call(objective, per_part[k]))
        return out

    def _sum(self, call, per_part=None):
        """``sum_k w_k call(objective_k[, per_part[k]])``."""
        total = None
        for (checkpoint, _), value in zip(self.parts, self._each(call, per_part)):
            total = checkpoint.weight * value if total is None else total + checkpoint.weight * value
        return total

    def embed(self, ids: Tensor) -> Tensor:
        with torch.no_grad():
            return self.embedding(ids.to(self.embedding.weight.device))

    def distance(self, x: Tensor, need_grad: bool = True, z_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Weighted distance; the LM term (``z_ids``) is taken under the first checkpoint only."""
        nll = torch.zeros((), device=x.device)
        total = None
        for n, (checkpoint, objective) in enumerate(self.parts):
            with checkpoint.active():
                f, part_nll = objective.distance(x, need_grad, z_ids if n == 0 else None)
            nll = part_nll if n == 0 else nll
            total = checkpoint.weight * f if total is None else total + checkpoint.weight * f
        return total, nll

    def value(self, ids: Tensor) -> float:
        return float(self._sum(lambda o: o.value(ids)))

    def value_embeds(self, x: Tensor) -> float:
        return float(self._sum(lambda o: o.value_embeds(x)))

    def value_and_grad(self, ids: Tensor) -> tuple[float, Tensor]:
        return self.value_and_grad_embeds(self.embed(ids))

    def value_and_grad_embeds(self, x: Tensor) -> tuple[float, Tensor]:
        value, grad = 0.0, torch.zeros_like(x)
        for checkpoint, objective in self.parts:
            with checkpoint.active():
                v, g = objective.value_and_grad_embeds(x)
            value, grad = value + checkpoint.weight * v, grad + checkpoint.weight * g
        return value, grad

    def per_text(self, ids: Tensor) -> list[float]:
        return self._sum(lambda o: torch.tensor(o.per_text(ids), dtype=torch.float64)).tolist()

    def row_grad(self, rows: Rows, row: int) -> Tensor:
        return self._sum(lambda o, r: o.row_grad(r, row), rows.parts)

    def rows(self, ids: Tensor, cache: bool = True) -> Rows:
        """One :class:`Rows` per checkpoint (each with its own embeddings and keys)."""
        return Rows(ids, parts=tuple(self._each(lambda o: o.rows(ids, cache))))

    def rows_from(self, base: Rows, at: Tensor, ids: Tensor) -> Rows:
        return Rows(ids, parts=tuple(self._each(lambda o, b: o.rows_from(b, at, ids), base.parts)))

    def prompt_rows(self, batch: dict[str, Tensor]) -> Rows:
        return Rows(batch["input_ids"], parts=tuple(self._each(lambda o: o.prompt_rows(batch))))

    def rows_value(self, rows: Rows) -> float:
        return float(self._sum(lambda o, r: o.rows_value(r), rows.parts))

    def swap_values(self, rows: Rows, at: Tensor, new: Rows) -> Tensor:
        return self._sum(lambda o, rn: o.swap_values(rn[0], at, rn[1]), list(zip(rows.parts, new.parts)))


Objective = MatchingObjective | TrajectoryObjective  # what a round matches: one checkpoint or several
