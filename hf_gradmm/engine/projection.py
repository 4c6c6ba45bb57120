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

The z-step of a round (engine/round.py) calls :func:`project` and then lets each row keep the
beam that gives its batch the lowest exact matching distance.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hf_gradmm.lm import prefix_state

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


def zscore(x: Tensor) -> Tensor:
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-12)


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
    pinned: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Project (B, T, d) points onto token ids, left to right, batched, with a KV cache.

    Each position chooses among its ``topk`` cosine candidates by a step score: the LM
    log-probability given prefix and tokens so far (``guidance = 0``: the reference
    projection), or a mix of its z-scored value and the z-scored first-order decrease of the
    matching distance ``-point_grad_t . (e_v - y_t)`` (``guidance`` in (0, 1]). ``beams = 1``
    keeps the best candidate at each position (greedy, as the authors do); ``beams = W`` keeps
    the W partial texts with the best summed step score per row (beam search; for the
    reference projection that is the joint LM log-probability over the candidate sets).
    ``pinned`` (T,): a token id per position that is fixed (a sentence pair's middle template
    tokens), -1 where the position is free; a fixed position takes its token in every beam.
    Returns the ids (B, W, T), best beam first, and each chosen token's LM log-probability.
    """
    if guidance and point_grad is None:
        raise ValueError("guided projection needs the gradient of the matching distance at the points.")
    embeddings = model.get_input_embeddings().weight
    device = embeddings.device
    points = points.to(device)
    candidates = cosine_candidates(points, embeddings, allowed, topk)  # (B, T, k)
    batch, length, k = candidates.shape
    fixed = [] if pinned is None else (pinned >= 0).nonzero().flatten().tolist()
    for t in fixed:
        candidates[:, t, :] = int(pinned[t])
    if guidance:
        step = embeddings[candidates].float() - points.float()[:, :, None, :]  # (B, T, k, d)
        gain = zscore(-(step * point_grad.to(device).float()[:, :, None, :]).sum(-1))  # first-order decrease of f
    rows = batch * beams
    logits, cache = prefix_state(model, prefix_ids, rows)
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
        if guidance and t not in fixed:
            score = (1 - guidance) * zscore(cand_lp) + guidance * gain[:, t, None, :]
        if t in fixed:  # one candidate: k copies would fill the beams with one text
            score = score.clone()
            score[..., 1:] = -float("inf")
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
