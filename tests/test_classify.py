"""Classification by label words: batched, cached few-shot scoring equals the plain computation."""

from __future__ import annotations

import torch

from hf_gradmm.lm import fewshot_prefix, label_word_logprobs
from hf_gradmm.tasks import label_token_ids


def _one_by_one(model, tok, task, texts, demos):
    ids = label_token_ids(task, tok)
    prefix = tok(fewshot_prefix(task, demos), add_special_tokens=True)["input_ids"] if demos else None
    rows = []
    for text in texts:
        if demos:
            full = prefix + tok(task.format_prompt(text), add_special_tokens=False)["input_ids"]
        else:
            full = tok(task.format_prompt(text), add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            rows.append(torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0, -1, ids].float(), -1))
    return torch.stack(rows)


def test_padded_and_cached_scoring_match_one_text_at_a_time(tiny_llama, smollm2_tokenizer, rotten_tomatoes):
    data, task = rotten_tomatoes
    texts = data["validation"]["text"][:5]  # different lengths: padding is exercised
    for demos in ((), task.demonstrations):
        batched = label_word_logprobs(tiny_llama, smollm2_tokenizer, task, texts, demos, batch_size=3)
        assert torch.allclose(batched, _one_by_one(tiny_llama, smollm2_tokenizer, task, texts, demos), atol=1e-4)


def test_contextual_calibration_subtracts_the_content_free_lean(tiny_llama, smollm2_tokenizer, rotten_tomatoes):
    data, task = rotten_tomatoes
    texts = data["validation"]["text"][:4]
    raw = label_word_logprobs(tiny_llama, smollm2_tokenizer, task, texts, task.demonstrations)
    cal = label_word_logprobs(tiny_llama, smollm2_tokenizer, task, texts, task.demonstrations, calibrate=True)
    bias = label_word_logprobs(tiny_llama, smollm2_tokenizer, task, ["N/A", "", "[MASK]"], task.demonstrations)
    assert torch.allclose(cal, torch.log_softmax(raw - bias.mean(0), -1), atol=1e-5)
