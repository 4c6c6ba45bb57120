"""The classifier-head recipe: the model the user trains in run_glue.py.

``AutoModelForSequenceClassification`` on the same pretrained body, a fresh classification head
(seeded), trained with ``transformers.Trainer`` on the raw texts and class ids (no template, no
label word), full or LoRA as the label-word recipe, with the same dev-chosen checkpoint
(:class:`~hf_gradmm.finetune.BestOnDevCallback`) and the same once-only test read by the caller.
Works for any model transformers maps to a sequence-classification class (SmolLM2's Llama and
Gemma-3's text model included).
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PrinterCallback,
    Trainer,
)

from hf_gradmm.finetune import BestOnDevCallback, FinetuneConfig, recipe_arguments
from hf_gradmm.lm import length_batched
from hf_gradmm.tasks.registry import split_pair


def classifier_from_lm(model, tokenizer, num_labels: int, seed: int):
    """A sequence classifier with ``model``'s body (a copy of its weights) and a fresh head drawn
    with ``seed``. Refuses a model transformers has no sequence-classification class for."""
    config = type(model.config).from_dict(model.config.to_dict())
    config.num_labels = num_labels
    config.pad_token_id = tokenizer.pad_token_id  # the classifier reads each row's last real token
    torch.manual_seed(seed)
    try:
        clf = AutoModelForSequenceClassification.from_config(config, dtype=model.dtype)
    except ValueError as err:
        raise ValueError(
            f"--head classifier: transformers has no sequence-classification model for {config.model_type!r} "
            f"({err}). Use --head label-word, or a model with an AutoModelForSequenceClassification class."
        ) from None
    missing, _ = clf.base_model.load_state_dict(model.base_model.state_dict(), strict=False)
    if missing:
        raise ValueError(f"--head classifier: the classifier's body does not match the model's ({missing[:3]} ...).")
    return clf.to(model.device)


def tokenize(tokenizer, texts: list[str], pair: bool = False, **kwargs):
    """The tokenizer on ``texts``, or on a pair task's two segments as two sequences (run_glue.py's
    ``tokenizer(sentence1, sentence2)``)."""
    if pair:
        firsts, seconds = zip(*(split_pair(t) for t in texts)) if texts else ((), ())
        return tokenizer(list(firsts), list(seconds), **kwargs)
    return tokenizer([t.strip() for t in texts], **kwargs)


def _encode(tokenizer, texts: list[str], labels: list[int], max_length: int, pair: bool) -> Dataset:
    enc = tokenize(tokenizer, texts, pair, truncation=True, max_length=max_length)
    return Dataset.from_dict({**enc, "labels": list(labels)})


def _trainable(clf, config: FinetuneConfig):
    """All weights (full) or LoRA adapters on every linear layer with the head trained in full."""
    clf.train()
    if config.finetune != "lora":
        return clf, config.learning_rate
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear"
    )
    return get_peft_model(clf, lora), config.lora_lr


def finetune_classifier(
    model,
    tokenizer,
    num_labels: int,
    texts: list[str],
    labels: list[int],
    dev: tuple[list[str], list[int]] | None,
    config: FinetuneConfig,
    seed: int,
    report_to: list[str] | None = None,
    report_dir: str | None = None,
    use_cpu: bool = False,
    pair: bool = False,
):
    """Train a classifier head (and the body, or LoRA adapters) on (texts, labels); returns
    (classifier, dev history, best step) with the best dev evaluation's parameters. The input
    model is not changed. ``pair``: the texts are sentence pairs (two sequences to the tokenizer)."""
    clf, lr = _trainable(classifier_from_lm(model, tokenizer, num_labels, seed), config)
    train = _encode(tokenizer, texts, labels, config.max_length, pair)
    dev_set = _encode(tokenizer, *dev, config.max_length, pair) if dev is not None else None

    def accuracy(pred) -> dict:
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    best = BestOnDevCallback(config.patience)
    with tempfile.TemporaryDirectory() as tmp:
        args = recipe_arguments(config, lr, seed, dev is not None, report_dir or tmp, report_to, use_cpu=use_cpu)
        trainer = Trainer(
            model=clf,
            args=args,
            train_dataset=train,
            eval_dataset=dev_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy if dev is not None else None,
            callbacks=[best] if dev is not None else [],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    best.restore(clf)
    clf.eval()
    return clf, best.history, best.best_step


@torch.no_grad()
def classifier_correct(
    clf, tokenizer, texts: list[str], labels: list[int], batch_size: int = 32, pair: bool = False
) -> list[int]:
    """1 where the classifier's class is the label, per text (batches of similar length)."""

    def predict(index: list[int]) -> torch.Tensor:
        batch = tokenize(tokenizer, [texts[i] for i in index], pair, padding=True, truncation=True, return_tensors="pt")
        return clf(**batch.to(clf.device)).logits.argmax(-1)

    preds = length_batched([len(t) for t in texts], batch_size, predict)
    return [] if preds is None else [int(p == y) for p, y in zip(preds.tolist(), labels)]
