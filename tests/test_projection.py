"""The token projection: greedy and beam search give the texts their scores say, cache included."""

from __future__ import annotations

import itertools

import torch

from hf_gradmm.engine.projection import allowed_vocabulary, cosine_candidates, project
from hf_gradmm.lm import token_logprobs


def _setup(model, tokenizer, batch=2, length=3, seed=0):
    torch.manual_seed(seed)
    emb = model.get_input_embeddings().weight
    allowed = allowed_vocabulary(tokenizer, emb.shape[0], "words")
    points = torch.randn(batch, length, emb.shape[1])
    prefix = torch.tensor([tokenizer("Here is a short review:")["input_ids"]])
    return points, allowed, prefix


def test_greedy_projection_picks_the_likeliest_candidate_at_each_position(tiny_llama, smollm2_tokenizer):
    points, allowed, prefix = _setup(tiny_llama, smollm2_tokenizer)
    ids, logprobs = project(tiny_llama, points, allowed, prefix, topk=5)
    assert ids.shape == (2, 1, 3)
    candidates = cosine_candidates(points, tiny_llama.get_input_embeddings().weight, allowed, 5)
    for t in range(3):  # recompute without a cache: each pick is the best-scored of its candidates
        with torch.no_grad():
            full = torch.cat([prefix.expand(2, -1), ids[:, 0, :t]], dim=1)
            lp = torch.log_softmax(tiny_llama(input_ids=full).logits[:, -1].float(), -1)
        best = lp.gather(1, candidates[:, t]).argmax(1)
        assert torch.equal(ids[:, 0, t], candidates[:, t].gather(1, best[:, None])[:, 0])
    assert torch.allclose(logprobs[:, 0], token_logprobs(tiny_llama, prefix, ids[:, 0]), atol=1e-4)


def test_exhaustive_beam_search_finds_the_jointly_likeliest_text(tiny_llama, smollm2_tokenizer):
    """With W = k^T beams nothing is pruned: the top beam is the brute-force argmax of the joint
    LM log-probability, and every beam's per-token log-probs match a cache-free recomputation
    (which fails if the KV cache is not reordered with the beams)."""
    points, allowed, prefix = _setup(tiny_llama, smollm2_tokenizer, batch=2, length=2, seed=1)
    k = 3
    ids, logprobs = project(tiny_llama, points, allowed, prefix, topk=k, beams=k**2)
    candidates = cosine_candidates(points, tiny_llama.get_input_embeddings().weight, allowed, k)
    for row in range(2):
        combos = torch.tensor(list(itertools.product(*candidates[row].tolist())))
        joint = token_logprobs(tiny_llama, prefix, combos).sum(1)
        assert torch.equal(ids[row, 0], combos[joint.argmax()])
        recomputed = token_logprobs(tiny_llama, prefix, ids[row])
        assert torch.allclose(logprobs[row], recomputed, atol=1e-4)
        assert len({tuple(r) for r in ids[row].tolist()}) == k**2  # all distinct
        assert (recomputed.sum(1).diff() <= 1e-4).all()  # best first
