"""Training sets at a budget of N examples per class: GRADMM's and the usual substitutes.

Each method returns ``(texts, labels)``; the harness fine-tunes every target model on each
with the same recipe. ``zero_shot`` and ``few_shot`` train nothing (few-shot puts the N real
examples per class in the prompt instead).

- ``random``: N real training examples per class, a seeded draw.
- ``herding`` / ``kcenter``: coresets on the generator's embeddings of a seeded real pool
  (the last hidden state at the prompt's final position: what the output projection reads).
  Herding greedily keeps the running mean of the picks closest to the class mean (Welling,
  2009); k-center greedily adds the point farthest from those picked (Sener & Savarese, 2018).
- ``llm``: texts the generator writes itself from the class-naming prefix
  (``"Here is a negative movie review:"``), sampled at temperature 1, as long as the
  synthesis's texts: the plain "LLM-generated" baseline.
- ``real_pool``: the real examples whose gradients made the GRADMM targets (its budget is
  ``target_examples`` per class, not N: a reference, not a competitor at equal budget).
- ``gradmm``: the synthesis output (the built dataset when there is one), best N per class
  by score (or matching distance); or a training-set file an evaluation saved (rerun a row).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk

from hf_gradmm.engine.gradients import last_hidden
from hf_gradmm.engine.objective import pair_pinned
from hf_gradmm.engine.projection import allowed_vocabulary
from hf_gradmm.lm import decode_texts, encode_texts, sample_texts
from hf_gradmm.tasks import TaskSpec

TRAINING_METHODS = ("random", "herding", "kcenter", "llm", "real_pool")
PROMPT_METHODS = ("zero_shot", "few_shot")


def _by_class(dataset: Dataset, task: TaskSpec) -> dict[int, list[int]]:
    labels = dataset["label"]
    return {c: [i for i, y in enumerate(labels) if y == c] for c in range(task.num_labels)}


def random_real(train: Dataset, task: TaskSpec, per_class: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for c, idx in _by_class(train, task).items():
        for i in rng.sample(idx, min(per_class, len(idx))):
            texts.append(train[i]["text"])
            labels.append(c)
    return texts, labels


@torch.no_grad()
def embed(model, tokenizer, task: TaskSpec, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """The last hidden state at each prompt's final position (N, d)."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = encode_texts(tokenizer, task, texts[start : start + batch_size])
        batch = batch.to(model.device)
        out.append(last_hidden(model, batch["input_ids"], attention_mask=batch["attention_mask"]).float().cpu())
    return torch.cat(out)


def herding(points: torch.Tensor, k: int) -> list[int]:
    """Greedy herding: each pick keeps the mean of the picks closest to the mean of all points."""
    target, total, picked = points.mean(0), torch.zeros_like(points[0]), []
    free = torch.ones(len(points), dtype=torch.bool)
    for t in range(min(k, len(points))):
        gap = (target - (total + points) / (t + 1)).norm(dim=1)
        gap[~free] = float("inf")
        i = int(gap.argmin())
        picked.append(i)
        free[i] = False
        total += points[i]
    return picked


def kcenter(points: torch.Tensor, k: int, seed: int) -> list[int]:
    """Greedy k-center from a seeded random first point: each pick is the point farthest from the picks."""
    first = random.Random(seed).randrange(len(points))
    picked = [first]
    dist = (points - points[first]).norm(dim=1)
    while len(picked) < min(k, len(points)):
        i = int(dist.argmax())
        picked.append(i)
        dist = torch.minimum(dist, (points - points[i]).norm(dim=1))
    return picked


def coreset(
    method: str, model, tokenizer, train: Dataset, task: TaskSpec, per_class: int, seed: int, pool_size: int
) -> tuple[list[str], list[int]]:
    """``herding`` or ``kcenter`` per class over a seeded pool of ``pool_size`` real examples per class."""
    texts, labels = [], []
    for c, pool in _pools(train, task, pool_size, seed).items():
        points = embed(model, tokenizer, task, pool)
        picks = herding(points, per_class) if method == "herding" else kcenter(points, per_class, seed)
        texts += [pool[i] for i in picks]
        labels += [c] * len(picks)
    return texts, labels


def _pools(train: Dataset, task: TaskSpec, pool_size: int, seed: int) -> dict[int, list[str]]:
    texts, labels = random_real(train, task, pool_size, seed)
    return {c: [t for t, y in zip(texts, labels) if y == c] for c in range(task.num_labels)}


def llm_generated(
    model,
    tokenizer,
    task: TaskSpec,
    per_class: int,
    seed: int,
    length: int | tuple[int, int],
    prefix: str | None = None,
) -> tuple[list[str], list[int]]:
    """``per_class`` texts per class sampled by the model from the class-naming ``prefix`` (None: the
    default). A pair task: segment 1, the template's middle tokens, segment 2 (``length`` per segment,
    one int for both), as a synthesis lays them out."""
    every = allowed_vocabulary(tokenizer, model.get_input_embeddings().weight.shape[0], "all")
    first, second = (length, length) if isinstance(length, int) else length
    pinned = pair_pinned(task.template, tokenizer, first, second) if task.is_pair else None
    texts, labels = [], []
    for c in range(task.num_labels):
        words = task.class_prefix(c, prefix, name_fallback=True)
        ids = tokenizer(words, add_special_tokens=True, return_tensors="pt")["input_ids"]
        gen = torch.Generator().manual_seed(seed * 1009 + c)
        total = first if pinned is None else len(pinned)
        out = sample_texts(model, ids, every, per_class, total, gen, 1.0, pinned)
        texts += [t.strip() for t in decode_texts(tokenizer, out, pinned)]
        labels += [c] * per_class
    return texts, labels


def gradmm_texts(folder: str | Path, task: TaskSpec, per_class: int) -> tuple[list[str], list[int]]:
    """The best ``per_class`` texts per class of a synthesis output (its built dataset if any), or
    the first ``per_class`` per class of a training-set file (.jsonl) an evaluation saved."""
    folder = Path(folder)
    if folder.is_file():
        return _training_file(folder, task, per_class)
    built = folder / "dataset" / "data"
    if built.is_dir():
        rows, key = load_from_disk(str(built))["train"], "score"
    elif (folder / "data" / "dataset_dict.json").exists():
        rows, key = load_from_disk(str(folder / "data"))["train"], "score"
    else:
        rows, key = Dataset.load_from_disk(str(folder)), "match_distance"
    names = rows.features["label"].names
    if list(names) != list(task.label_names):
        raise ValueError(f"{folder} has classes {names}, the task {task.name!r} has {list(task.label_names)}.")
    texts, labels = [], []
    for c in range(task.num_labels):
        mine = sorted((r for r in rows if r["label"] == c), key=lambda r: r[key])[:per_class]
        texts += [r["text"] for r in mine]
        labels += [c] * len(mine)
    return texts, labels


def _training_file(path: Path, task: TaskSpec, per_class: int) -> tuple[list[str], list[int]]:
    """A .jsonl of {"text", "label"} lines (labels as class indices of ``task``)."""
    if path.suffix != ".jsonl":
        raise ValueError(f"{path} is a file but not a training-set .jsonl; give a synthesis folder or a .jsonl file.")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    bad = [r for r in rows if not {"text", "label"} <= set(r) or r["label"] not in range(task.num_labels)]
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} line(s) without a text and a label in 0..{task.num_labels - 1} "
            f"(first: {str(bad[0])[:80]})."
        )
    texts, labels = [], []
    for c in range(task.num_labels):
        mine = [r["text"] for r in rows if r["label"] == c][:per_class]
        texts += mine
        labels += [c] * len(mine)
    return texts, labels
