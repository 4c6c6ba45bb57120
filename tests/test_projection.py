"""The token projection: greedy and beam search give the texts their scores say, cache included."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from hf_gradmm.engine.projection import allowed_vocabulary, cosine_candidates, project
from hf_gradmm.lm import embedding_scale, token_logprobs


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


def test_embedding_scale_is_what_the_layer_multiplies_its_rows_by(tiny_llama, smollm2_tokenizer):
    """Gemma's embedding layer gives weight rows times sqrt(d): a random init drawn at the rows' norm
    would start 1/sqrt(d) as long as the tokens the model sees (targets/setup.py scales by it)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    assert embedding_scale(tiny_llama) == 1.0
    config = Gemma3TextConfig(
        vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8,
    )  # fmt: skip
    gemma = Gemma3ForCausalLM(config).eval()
    assert embedding_scale(gemma) == pytest.approx(16**0.5, rel=1e-5)
    ids = torch.tensor([3, 5, 7])
    expected = gemma.get_input_embeddings().weight[ids] * embedding_scale(gemma)
    assert torch.allclose(gemma.get_input_embeddings()(ids), expected, atol=1e-5)

    class Shifted(nn.Embedding):  # not a scaled lookup: refused, naming the layer
        def forward(self, ids):
            return super().forward(ids) + 1.0

    tiny_llama.model.embed_tokens, kept = (
        Shifted(*tiny_llama.get_input_embeddings().weight.shape),
        tiny_llama.model.embed_tokens,
    )
    try:
        with pytest.raises(ValueError, match="Shifted does not give scaled rows"):
            embedding_scale(tiny_llama)
    finally:
        tiny_llama.model.embed_tokens = kept
