"""Forward passes that run only what changed: the last hidden state of rows that differ from rows
already run only from some position on.

A token swap at position p leaves the keys and values of positions < p as they were, and a
beam often shares its start with its row's best beam. So the refinement's candidates and the
beam choice's beams need the model only from their first changed position: each row's keys
and values are kept (:func:`hidden_and_cache`), and :func:`suffix_hidden` runs the changed
suffixes of all rows packed into one sequence, each attending to its base row's kept prefix and
to its own suffix (a 4D attention mask), at its true positions. The result is the same hidden
state as a full pass (to float rounding); :func:`suffix_matches` checks that once per model,
because a model whose attention ignores a custom mask would silently give other numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from hf_gradmm.engine.gradients import last_hidden, output_projection


def _hook_hidden(model: nn.Module, seen: list[Tensor]):
    return output_projection(model).register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))


def _stacked(cache) -> Tensor:
    """A cache's keys and values as one tensor, row first: (B, layers, 2, heads, S, head_dim)."""
    return torch.stack([torch.stack([layer.keys, layer.values], dim=1) for layer in cache.layers], dim=1)


@torch.no_grad()
def hidden_and_cache(model: nn.Module, inputs_embeds: Tensor) -> tuple[Tensor, Tensor]:
    """Last-position input of the output projection (B, d) and every row's keys and values."""
    seen: list[Tensor] = []
    handle = _hook_hidden(model, seen)
    try:
        out = model(inputs_embeds=inputs_embeds, use_cache=True, logits_to_keep=1)
    finally:
        handle.remove()
    return seen[-1][:, -1, :], _stacked(out.cache)


@torch.no_grad()
def suffix_hidden(
    model: nn.Module, base_cache: Tensor, base: Tensor, starts: Tensor, inputs_embeds: Tensor
) -> tuple[Tensor, Tensor]:
    """Last hidden states (K, d) and keys and values of K rows ``inputs_embeds`` (K, S, d), where
    row k equals row ``base[k]`` of ``base_cache`` before position ``starts[k]`` (< S)."""
    count, length = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    base, starts = base.to(device), starts.to(device)
    lens = length - starts
    segment = torch.repeat_interleave(torch.arange(count, device=device), lens)
    positions = torch.cat([torch.arange(int(s), length, device=device) for s in starts.tolist()])
    packed = torch.cat([inputs_embeds[k, int(s) :] for k, s in enumerate(starts.tolist())])[None]
    rows, layers, _, heads, _, dim = base_cache.shape
    past = base_cache.permute(1, 2, 3, 0, 4, 5).reshape(layers, 2, heads, rows * length, dim)
    cache = DynamicCache(ddp_cache_data=[(p[0][None], p[1][None]) for p in past], config=model.config)
    past_row = torch.arange(rows * length, device=device) // length
    past_pos = torch.arange(rows * length, device=device) % length
    seen_past = (past_row[None, :] == base[segment][:, None]) & (past_pos[None, :] < starts[segment][:, None])
    seen_new = (segment[None, :] == segment[:, None]) & (positions[None, :] <= positions[:, None])
    allowed = torch.cat([seen_past, seen_new], dim=1)
    mask = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype, device=device).masked_fill(~allowed, float("-inf"))
    ends = torch.cumsum(lens, 0) - 1
    seen: list[Tensor] = []
    handle = _hook_hidden(model, seen)
    try:
        model(
            inputs_embeds=packed,
            position_ids=positions[None],
            attention_mask=mask[None, None],
            cache=cache,
            use_cache=True,
            logits_to_keep=ends,
        )
    finally:
        handle.remove()
    new = _stacked(cache)[0, :, :, :, rows * length :]  # (layers, 2, heads, sum(lens), dim): the suffixes
    full = base_cache[base].clone()
    for k, s in enumerate(starts.tolist()):  # each row's keys and values: its base's prefix, its own suffix
        full[k, :, :, :, s:] = new[:, :, :, int(ends[k]) - (length - s) + 1 : int(ends[k]) + 1]
    return seen[-1][0], full


def suffix_matches(model: nn.Module, inputs_embeds: Tensor, hidden: Tensor, tolerance: float = 1e-4) -> bool:
    """Whether ``hidden`` (from :func:`suffix_hidden`) is what a full pass over ``inputs_embeds`` gives."""
    with torch.no_grad():
        full = last_hidden(model, inputs_embeds=inputs_embeds)
    return bool((full - hidden).norm() <= tolerance * full.norm())
