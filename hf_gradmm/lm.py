"""The language model as a scorer and a writer: token log-probabilities, NLLs, sampling, label words.

Every module that asks the LM something goes through here, so a text is tokenised, scored and
prompted the same way everywhere: a text without special tokens (:func:`text_ids`), the NLL of
a text from the tokenizer's start token(s) (:func:`text_nll`), continuations of a prefix
(:func:`sample_texts`), and classification by label words (:func:`label_word_logprobs`).

Classification: the prompt is ``template.format(text=...)`` and each class's single label-word
token is scored at the last position. Few-shot prompts put complete demonstrations (template +
label word) before it. Small models lean hard toward one label word (SmolLM2 with the Rotten
Tomatoes demonstrations says " great" for 99% of real validation texts); contextual calibration
(Zhao et al., 2021) removes that lean by subtracting the class log-probabilities of content-free
inputs ("N/A", "", "[MASK]") before the argmax (docs/builder.md measures both).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hf_gradmm.tasks import TaskSpec, label_token_ids
from hf_gradmm.tasks.registry import join_pair

CONTENT_FREE = ("N/A", "", "[MASK]")


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


def embedding_scale(model: nn.Module) -> float:
    """The factor the model's input embedding layer multiplies its weight rows by (Gemma: sqrt(d);
    most models: 1): token ``v`` enters the model as ``weight[v] * scale``, the space the engine's
    points live in, so a point is compared with token rows scaled by it. Raises ``ValueError``
    for a layer that is not a scaled lookup of its rows."""
    layer = model.get_input_embeddings()
    probe = torch.arange(min(16, layer.weight.shape[0]), device=layer.weight.device)
    with torch.no_grad():
        given, rows = layer(probe).float(), layer.weight[probe].float()
    scale = float(given.norm() / rows.norm())
    if not torch.allclose(given, rows * scale, rtol=1e-2, atol=1e-6):
        raise ValueError(
            f"{type(layer).__name__} does not give scaled rows of its weight for token ids; hf_gradmm "
            "projects points onto those rows and cannot use this model."
        )
    return scale


def text_ids(tokenizer, text: str) -> list[int]:
    """``text``'s token ids without special tokens: how a text (not a prompt) is tokenised."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def start_ids(tokenizer, text: str = "") -> Tensor:
    """``text`` tokenized with the tokenizer's special tokens as a (1, n) batch, or its EOS when
    that is empty. ``start_ids(tokenizer)``: the context every text's NLL is measured from."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"] or [tokenizer.eos_token_id]
    return torch.tensor([ids], dtype=torch.long)


def encode_prompts(tokenizer, prompts: list[str]) -> dict[str, Tensor]:
    """Left-padded batch encoding (the label is predicted at the last position of every row)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side


def encode_texts(tokenizer, task: TaskSpec, texts: list[str]) -> dict[str, Tensor]:
    """``texts`` each in ``task``'s prompt, left-padded as :func:`encode_prompts` does: the rows whose
    last position predicts the label word (how the scorer, the calibration and herding read texts)."""
    return encode_prompts(tokenizer, [task.format_prompt(t) for t in texts])


# ---------------------------------------------------------------------------------------------
# Log-probabilities and NLLs
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def prefix_state(model: nn.Module, prefix_ids: Tensor, batch: int):
    """Run the LM prefix once for ``batch`` rows; returns (next-token logits, KV cache)."""
    out = model(input_ids=prefix_ids.to(model.device).expand(batch, -1), use_cache=True)
    return out.logits[:, -1, :].float(), out.cache


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


def text_nll(model: nn.Module, tokenizer, texts: list[str]) -> list[float]:
    """Mean token NLL of each text under the model, from the start token(s); NaN for an empty text."""
    start = start_ids(tokenizer)
    out = []
    for text in texts:
        ids = text_ids(tokenizer, text)
        out.append(float(-token_logprobs(model, start, torch.tensor([ids])).mean()) if ids else float("nan"))
    return out


def mean_text_nll(model: nn.Module, tokenizer, texts: list[str]) -> float:
    """Mean of :func:`text_nll` over the non-empty texts."""
    values = [v for v in text_nll(model, tokenizer, texts) if v == v]  # NaN != NaN
    return sum(values) / max(1, len(values))


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_texts(
    model: nn.Module,
    prefix_ids: Tensor,
    allowed: Tensor,
    batch: int,
    length: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    pinned: Tensor | None = None,
) -> Tensor:
    """Sample ``batch`` continuations of exactly ``length`` allowed tokens from the LM (B, T);
    ``pinned`` (T,): a fixed token id per position (a pair's middle template tokens), -1 where free."""
    logits, cache = prefix_state(model, prefix_ids, batch)
    ids = torch.empty(batch, length, dtype=torch.long, device=logits.device)
    banned = ~allowed[: logits.shape[-1]].to(logits.device)
    for t in range(length):
        if pinned is not None and pinned[t] >= 0:
            ids[:, t] = int(pinned[t])
        else:
            logits = logits / temperature
            logits[:, banned] = -float("inf")
            probs = torch.softmax(logits, dim=-1).cpu()  # drawn with the (CPU) generator: seeded on any device
            ids[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(ids.device)
        out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
        logits, cache = out.logits[:, -1, :].float(), out.cache
    return ids


def pinned_span(pinned: Tensor) -> tuple[int, int]:
    """Where a pair's pinned middle tokens start and end in its free positions (``pinned`` >= 0 there)."""
    fixed = (pinned >= 0).nonzero().flatten()
    return int(fixed[0]), int(fixed[-1]) + 1


def decode_texts(tokenizer, ids: Tensor, pinned: Tensor | None = None) -> list[str]:
    """The texts of token rows (B, T); with ``pinned`` (a pair's middle template tokens, -1 where free)
    each row's two free spans, decoded apart and joined (stripped) as a pair task carries them."""
    if pinned is None:  # as decoded (a leading space kept)
        return tokenizer.batch_decode(ids, skip_special_tokens=True)
    start, end = pinned_span(pinned)
    firsts = tokenizer.batch_decode(ids[:, :start], skip_special_tokens=True)
    seconds = tokenizer.batch_decode(ids[:, end:], skip_special_tokens=True)
    return [join_pair(a, b) for a, b in zip(firsts, seconds)]


# ---------------------------------------------------------------------------------------------
# Label words: the model as a classifier
# ---------------------------------------------------------------------------------------------


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
    instruction: str = "",
) -> Tensor:
    """Log-probability of each class's label word after each text's prompt: (N, num_labels).

    Normalised over the label words only (a softmax over the classes' logits), so each row is
    the model's class distribution; with ``calibrate``, after contextual calibration (the mean
    log-probabilities of the content-free inputs are subtracted). ``instruction`` comes first
    (:meth:`TaskSpec.instruction`), then the demonstrations; the KV cache of that prefix is
    computed once and shared by every batch.
    """
    token_ids = label_token_ids(task, tokenizer)
    head = instruction + fewshot_prefix(task, demonstrations)
    if head:
        start = tokenizer(head, add_special_tokens=True, return_tensors="pt")
        prefix = model(input_ids=start["input_ids"].to(model.device), use_cache=True).cache
    prompts = [task.format_prompt(t) for t in texts]

    def scores(index: list[int]) -> Tensor:
        chunk = [prompts[i] for i in index]
        if head:
            return _after_prefix(model, tokenizer, prefix, chunk)[:, token_ids].float()
        batch = encode_prompts(tokenizer, chunk).to(model.device)
        return model(**batch, logits_to_keep=1).logits[:, -1, token_ids].float()

    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]] if prompts else []
    rows = length_batched(lengths, batch_size, scores)
    out = torch.log_softmax(rows, dim=-1).cpu() if rows is not None else torch.empty(0, task.num_labels)
    if calibrate and len(out):
        bias = label_word_logprobs(model, tokenizer, task, list(CONTENT_FREE), demonstrations, instruction=instruction)
        bias = bias.mean(0)
        out = torch.log_softmax(out - bias, dim=-1)
    return out


def label_margins(
    model: nn.Module,
    tokenizer,
    task: TaskSpec,
    texts: list[str],
    labels: list[int],
    demonstrations: list[tuple[str, int]] | tuple = (),
    calibrate: bool = False,
    instruction: str = "",
    batch_size: int = 16,
) -> Tensor:
    """Each text's label margin, (N,): the log-probability of its own class's label word minus the
    best other class's (:func:`label_word_logprobs`); > 0 where the model, as a classifier, names
    the text's own class, and the larger the more plainly the text reads as that class."""
    logprobs = label_word_logprobs(
        model, tokenizer, task, texts, demonstrations, batch_size, calibrate=calibrate, instruction=instruction
    )
    rows, own = torch.arange(len(texts)), torch.tensor(labels, dtype=torch.long)
    rest = logprobs.clone()
    rest[rows, own] = -float("inf")
    return logprobs[rows, own] - rest.max(dim=1).values


def filter_margins(model: nn.Module, tokenizer, task: TaskSpec, texts: list[str], labels: list[int]) -> Tensor:
    """:func:`label_margins` as the builder's default label filter reads them: the task's
    hand-written demonstrations and instruction, contextually calibrated (nothing private). The
    selection's shortlist and the readability share read them here, so they cannot drift apart."""
    return label_margins(model, tokenizer, task, texts, labels, list(task.demonstrations), True, task.instruction())


def length_batched(lengths: list[int], batch_size: int, run: Callable[[list[int]], Tensor]) -> Tensor | None:
    """``run(indices)`` (a tensor with one row per index) on batches of items of similar ``lengths``
    (padding to a batch's longest item is most of the work otherwise); the rows back in input order,
    or None when there are no items."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    parts = [run(order[first : first + batch_size]) for first in range(0, len(order), batch_size)]
    if not parts:
        return None
    rows = torch.cat(parts)
    out = torch.empty_like(rows)
    out[torch.tensor(order, device=rows.device)] = rows
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
