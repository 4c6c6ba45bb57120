"""Classification by label words: the model's prediction is the label word it scores highest.

The same prompt as everywhere else in hf_gradmm: ``template.format(text=...)``, then each
class's single label-word token scored at the last position. Few-shot prompts put complete
demonstrations (template + label word) before it, one per line block.

Small models lean hard toward one label word (SmolLM2 with the Rotten Tomatoes demonstrations
says " great" for 99% of real validation texts). Contextual calibration (Zhao et al., 2021)
removes that lean: the class log-probabilities of content-free inputs ("N/A", "", "[MASK]")
in the same prompt are subtracted before the argmax (docs/builder.md measures both).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from hf_gradmm.gradients import encode_prompts
from hf_gradmm.tasks import TaskSpec, label_token_ids

CONTENT_FREE = ("N/A", "", "[MASK]")


def fewshot_prefix(task: TaskSpec, demonstrations: list[tuple[str, int]] | tuple = ()) -> str:
    """The demonstrations as completed prompts, each followed by a blank line."""
    return "".join(task.format_prompt(text) + task.label_continuation(label) + "\n\n" for text, label in demonstrations)


@torch.no_grad()
def label_word_logprobs(
    model: nn.Module,
    tokenizer,
    task: TaskSpec,
    texts: list[str],
    demonstrations: list[tuple[str, int]] | tuple = (),
    batch_size: int = 16,
    calibrate: bool = False,
) -> Tensor:
    """Log-probability of each class's label word after each text's prompt: (N, num_labels).

    Normalised over the label words only (a softmax over the classes' logits), so each row is
    the model's class distribution; with ``calibrate``, after subtracting the mean
    log-probabilities of the content-free inputs (contextual calibration). With
    demonstrations, their KV cache is computed once and shared by every batch.
    """
    token_ids = label_token_ids(task, tokenizer)
    rows = []
    if demonstrations:
        start = tokenizer(fewshot_prefix(task, demonstrations), add_special_tokens=True, return_tensors="pt")
        prefix = model(input_ids=start["input_ids"].to(model.device), use_cache=True).cache
    for first in range(0, len(texts), batch_size):
        prompts = [task.format_prompt(t) for t in texts[first : first + batch_size]]
        if demonstrations:
            rows.append(_after_prefix(model, tokenizer, prefix, prompts)[:, token_ids].float())
        else:
            batch = encode_prompts(tokenizer, prompts).to(model.device)
            rows.append(model(**batch, logits_to_keep=1).logits[:, -1, token_ids].float())
    out = torch.log_softmax(torch.cat(rows), dim=-1).cpu() if rows else torch.empty(0, task.num_labels)
    if calibrate and len(out):
        bias = label_word_logprobs(model, tokenizer, task, list(CONTENT_FREE), demonstrations).mean(0)
        out = torch.log_softmax(out - bias, dim=-1)
    return out


def _after_prefix(model: nn.Module, tokenizer, prefix, prompts: list[str]) -> Tensor:
    """Next-token logits at the end of each prompt, read after a cached prefix (right padding, so
    every token keeps its true position)."""
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    n = len(prompts)
    cache = copy.deepcopy(prefix)
    cache.batch_repeat_interleave(n)
    mask = batch["attention_mask"].to(model.device)
    full_mask = torch.cat([torch.ones(n, cache.get_seq_length(), dtype=mask.dtype, device=mask.device), mask], 1)
    logits = model(input_ids=batch["input_ids"].to(model.device), attention_mask=full_mask, cache=cache).logits
    return logits[torch.arange(n, device=logits.device), mask.sum(1) - 1]


def predict(
    model: nn.Module, tokenizer, task: TaskSpec, texts: list[str], demonstrations=(), calibrate: bool = False
) -> list[int]:
    """The class whose label word scores highest, per text (after contextual calibration if asked)."""
    return label_word_logprobs(model, tokenizer, task, texts, demonstrations, calibrate=calibrate).argmax(-1).tolist()
