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
    log-probabilities of the content-free inputs (contextual calibration).
    """
    token_ids = label_token_ids(task, tokenizer)
    prefix = fewshot_prefix(task, demonstrations)
    rows = []
    for start in range(0, len(texts), batch_size):
        prompts = [prefix + task.format_prompt(t) for t in texts[start : start + batch_size]]
        batch = encode_prompts(tokenizer, prompts)
        logits = model(**batch).logits[:, -1, token_ids].float()
        rows.append(torch.log_softmax(logits, dim=-1))
    out = torch.cat(rows) if rows else torch.empty(0, task.num_labels)
    if calibrate and len(out):
        bias = label_word_logprobs(model, tokenizer, task, list(CONTENT_FREE), demonstrations).mean(0)
        out = torch.log_softmax(out - bias, dim=-1)
    return out


def predict(
    model: nn.Module, tokenizer, task: TaskSpec, texts: list[str], demonstrations=(), calibrate: bool = False
) -> list[int]:
    """The class whose label word scores highest, per text (after contextual calibration if asked)."""
    return label_word_logprobs(model, tokenizer, task, texts, demonstrations, calibrate=calibrate).argmax(-1).tolist()
