"""Token projection: from continuous input embeddings back to real, readable tokens.

GRADMM's z-step does not round each position to its nearest token. Left to right, it takes
the top-k allowed tokens by cosine similarity to the position's vector and keeps the one the
LM scores highest given an LM prefix (an instruction naming the class) and the tokens chosen
so far; readability comes from the LM. That ``reference`` projection ignores the matching
objective when it picks among the k candidates, and a prototype measured that it gives back
most of the matching the continuous iterate reached. The ``guided`` projection scores the
same candidates by LM log-probability *and* their first-order effect on the matching distance
(HotFlip/AutoPrompt/GCG style): ``-g_t . (e_v - y_t)`` with ``g = df/dY`` at the point being
projected.

:func:`swap_refine` is the discrete counterpart, used after ADMM: token swaps on a projected
batch, proposed by the same first-order score and accepted only when the exact distance falls.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB_FILTERS = ("words", "words+punct", "all")
_WORD = re.compile(r"^ ?[A-Za-z]+(?:['-][A-Za-z]+)?$")
_PUNCT = re.compile(r"^ ?[.,!?;:'\"()-]$")


_ALLOWED_CACHE: dict[tuple, Tensor] = {}


def allowed_vocabulary(tokenizer, num_embeddings: int, kind: str = "words", max_chars: int = 17) -> Tensor:
    """Boolean mask over the embedding matrix (padded rows included) of tokens a text may use.

    ``words``: word-like tokens only (letters with at most one inner apostrophe or hyphen, an
    optional leading space, at most ``max_chars`` characters: no digits, newlines, markup or
    symbols, no special tokens); ``words+punct`` adds single punctuation marks; ``all``: every
    real token except special ones. Rows past the tokenizer's vocabulary are never allowed.
    """
    if kind not in VOCAB_FILTERS:
        raise ValueError(f"Unknown vocabulary filter {kind!r}; choose one of {VOCAB_FILTERS}.")
    key = (tokenizer.name_or_path, len(tokenizer), num_embeddings, kind, max_chars)
    if key not in _ALLOWED_CACHE:  # decoding every token takes a second or two: once per tokenizer
        _ALLOWED_CACHE[key] = _allowed(tokenizer, num_embeddings, kind, max_chars)
    return _ALLOWED_CACHE[key].clone()


def _allowed(tokenizer, num_embeddings: int, kind: str, max_chars: int) -> Tensor:
    mask = torch.zeros(num_embeddings, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for token_id in range(min(len(tokenizer), num_embeddings)):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id])
        if kind == "all":
            mask[token_id] = bool(text.strip()) and "\ufffd" not in text
        elif len(text.strip()) <= max_chars and (_WORD.match(text) or (kind == "words+punct" and _PUNCT.match(text))):
            mask[token_id] = True
    if not mask.any():
        raise ValueError(f"The vocabulary filter {kind!r} allows no token of this tokenizer.")
    return mask


def cosine_candidates(points: Tensor, embeddings: Tensor, allowed: Tensor, topk: int) -> Tensor:
    """Top-k allowed token ids by cosine similarity to each point: (B, T, d) -> (B, T, k)."""
    unit = F.normalize(embeddings.float(), dim=-1)
    sims = F.normalize(points.float().to(unit.device), dim=-1) @ unit.T
    sims[..., ~allowed.to(unit.device)] = -float("inf")
    return sims.topk(min(topk, int(allowed.sum())), dim=-1).indices


def _zscore(x: Tensor) -> Tensor:
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def _prefix_state(model: nn.Module, prefix_ids: Tensor, batch: int):
    """Run the LM prefix once for ``batch`` rows; returns (next-token logits, KV cache)."""
    out = model(input_ids=prefix_ids.to(model.device).expand(batch, -1), use_cache=True)
    return out.logits[:, -1, :].float(), out.cache


@torch.no_grad()
def project(
    model: nn.Module,
    points: Tensor,
    allowed: Tensor,
    prefix_ids: Tensor,
    topk: int = 200,
    guidance: float = 0.0,
    point_grad: Tensor | None = None,
    beams: int = 1,
) -> tuple[Tensor, Tensor]:
    """Project (B, T, d) points onto token ids, left to right, batched, with a KV cache.

    Each position chooses among its ``topk`` cosine candidates by a step score: the LM
    log-probability given prefix and tokens so far (``guidance = 0``: the reference
    projection), or a mix of its z-scored value and the z-scored first-order decrease of the
    matching distance ``-point_grad_t . (e_v - y_t)`` (``guidance`` in (0, 1]). ``beams = 1``
    keeps the best candidate at each position (greedy, as the authors do); ``beams = W`` keeps
    the W partial texts with the best summed step score per row (beam search; for the
    reference projection that is the joint LM log-probability over the candidate sets).
    Returns the ids (B, W, T), best beam first, and each chosen token's LM log-probability.
    """
    if guidance and point_grad is None:
        raise ValueError("guided projection needs the gradient of the matching distance at the points.")
    embeddings = model.get_input_embeddings().weight
    device = embeddings.device
    points = points.to(device)
    candidates = cosine_candidates(points, embeddings, allowed, topk)  # (B, T, k)
    batch, length, k = candidates.shape
    if guidance:
        step = embeddings[candidates].float() - points.float()[:, :, None, :]  # (B, T, k, d)
        gain = _zscore(-(step * point_grad.to(device).float()[:, :, None, :]).sum(-1))  # first-order decrease of f
    rows = batch * beams
    logits, cache = _prefix_state(model, prefix_ids, rows)
    total = torch.full((batch, beams), -float("inf"), device=device)
    total[:, 0] = 0.0  # every beam starts as the same empty text: expand only the first
    ids = torch.empty(batch, beams, length, dtype=torch.long, device=device)
    logprobs = torch.empty(batch, beams, length, device=device)
    base = (torch.arange(batch, device=device) * beams)[:, None]
    for t in range(length):
        lp = torch.log_softmax(logits, dim=-1).view(batch, beams, -1)
        cand = candidates[:, t, None, :].expand(-1, beams, -1)  # (B, W, k)
        cand_lp = lp.gather(2, cand)
        score = cand_lp
        if guidance:
            score = (1 - guidance) * _zscore(cand_lp) + guidance * gain[:, t, None, :]
        best = (total[..., None] + score).view(batch, -1).topk(beams, dim=-1)
        origin, pick = best.indices // k, best.indices % k
        total = best.values
        ids = ids.gather(1, origin[..., None].expand(-1, -1, length))
        logprobs = logprobs.gather(1, origin[..., None].expand(-1, -1, length))
        ids[:, :, t] = cand.gather(2, pick[..., None]).squeeze(-1)
        chosen_lp = cand_lp.gather(1, origin[..., None].expand(-1, -1, k))  # (B, W, k) of the kept beams
        logprobs[:, :, t] = chosen_lp.gather(2, pick[..., None]).squeeze(-1)
        if beams > 1:
            cache.reorder_cache((base + origin).reshape(-1))
        out = model(input_ids=ids[:, :, t].reshape(rows, 1), cache=cache, use_cache=True)
        logits, cache = out.logits[:, -1, :].float(), out.cache
    return ids, logprobs


@torch.no_grad()
def position_logprobs(model: nn.Module, prefix_ids: Tensor, ids: Tensor) -> Tensor:
    """LM log-probabilities over the vocabulary at each position of ``ids`` (B, T) -> (B, T, V)."""
    prefix_ids, ids = prefix_ids.to(model.device), ids.to(model.device)
    full = torch.cat([prefix_ids.expand(ids.shape[0], -1), ids], dim=1)
    logits = model(input_ids=full, use_cache=False).logits[:, prefix_ids.shape[1] - 1 : -1, :].float()
    return torch.log_softmax(logits, dim=-1)


def token_logprobs(model: nn.Module, prefix_ids: Tensor, ids: Tensor) -> Tensor:
    """LM log-probability of each token of ``ids`` given the prefix and the tokens before it."""
    ids = ids.to(model.device)
    return position_logprobs(model, prefix_ids, ids).gather(2, ids[..., None]).squeeze(-1)


def start_ids(tokenizer, text: str = "") -> Tensor:
    """``text`` tokenized with the tokenizer's special tokens as a (1, n) batch, or its EOS when
    that is empty. ``start_ids(tokenizer)``: the context every text's NLL is measured from."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"] or [tokenizer.eos_token_id]
    return torch.tensor([ids], dtype=torch.long)


def text_nll(model: nn.Module, tokenizer, texts: list[str]) -> list[float]:
    """Mean token NLL of each text under the model, from the start token(s); NaN for an empty text."""
    start = start_ids(tokenizer)
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(float(-token_logprobs(model, start, torch.tensor([ids])).mean()) if ids else float("nan"))
    return out


def mean_text_nll(model: nn.Module, tokenizer, texts: list[str]) -> float:
    """Mean of :func:`text_nll` over the non-empty texts."""
    values = [v for v in text_nll(model, tokenizer, texts) if v == v]  # NaN != NaN
    return sum(values) / max(1, len(values))


@torch.no_grad()
def sample_texts(
    model: nn.Module,
    prefix_ids: Tensor,
    allowed: Tensor,
    batch: int,
    length: int,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> Tensor:
    """Sample ``batch`` continuations of exactly ``length`` allowed tokens from the LM (B, T)."""
    logits, cache = _prefix_state(model, prefix_ids, batch)
    ids = torch.empty(batch, length, dtype=torch.long, device=logits.device)
    banned = ~allowed[: logits.shape[-1]].to(logits.device)
    for t in range(length):
        logits = logits / temperature
        logits[:, banned] = -float("inf")
        probs = torch.softmax(logits, dim=-1).cpu()  # drawn with the (CPU) generator: seeded on any device
        ids[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(ids.device)
        out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
        logits, cache = out.logits[:, -1, :].float(), out.cache
    return ids


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
    current, grad = objective.value_and_grad(ids)
    base_nll = -token_logprobs(model, prefix_ids, ids).mean().item()
    rows_idx, pos_idx = torch.arange(batch, device=device)[:, None], torch.arange(length, device=device)[None, :]
    for step in range(steps):
        with torch.no_grad():
            g = grad.float()
            gain = -(g @ emb.T) + (g * emb[ids]).sum(-1, keepdim=True)  # (B, T, V)
            gain[..., ~allowed] = -float("inf")
            gain[rows_idx, pos_idx, ids] = -float("inf")
            top_gain, top_ids = gain.topk(candidates_per_position * 4, dim=-1)
            score = top_gain
            if lm_weight:
                lp = position_logprobs(model, prefix_ids, ids).gather(2, top_ids)
                score = (1 - lm_weight) * _zscore(top_gain) + lm_weight * _zscore(lp)
            pool = top_ids.gather(2, score.topk(candidates_per_position, dim=-1).indices)  # (B, T, c)
            # drawn with the (CPU) generator, then moved: the same swaps on any device
            seq = torch.randint(batch, (swaps_per_step,), generator=generator).to(device)
            pos = torch.randint(length, (swaps_per_step,), generator=generator).to(device)
            pick = torch.randint(candidates_per_position, (swaps_per_step,), generator=generator).to(device)
            new_rows = ids[seq].clone()
            new_rows[torch.arange(swaps_per_step, device=device), pos] = pool[seq, pos, pick]
            values = objective.swap_values(ids, seq, new_rows)
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
