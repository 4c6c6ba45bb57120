"""Fine-tune a causal LM on labelled texts with the label-word loss, choosing the checkpoint on dev.

Shared by the evaluation (every method is trained with this recipe) and the trajectory targets
(a short fine-tuning on the real pool gives the target checkpoints).

The loss is the cross-entropy of the class's label word right after the task template, the
same token everywhere in hf_gradmm. Training runs in ``transformers.Trainer`` (so accelerate
places it on a GPU when there is one), full or LoRA (peft). Every ``eval_steps`` the model is
scored on a real **dev** split; the best state (trainable parameters, kept in memory) is
restored at the end, and training stops after ``patience`` evaluations without improvement.
The test split is never seen here: the caller scores the returned model on it once.
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import evaluate
import torch
from datasets import Dataset
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from hf_gradmm.arguments import check_choices, check_number
from hf_gradmm.tasks import TaskSpec, label_token_ids

ACCURACY = str(Path(__file__).with_name("label_word_accuracy.py"))


@dataclass
class FinetuneConfig:
    """The fine-tuning recipe every method shares (``hf-gradmm evaluate`` flags)."""

    finetune: Literal["full", "lora"] = field(
        default="full", metadata={"help": "'full' (all weights) or 'lora' (peft LoRA adapters)."}
    )
    head: Literal["label-word", "classifier"] = field(
        default="label-word",
        metadata={
            "help": "What is trained: 'label-word' (the causal LM predicts the class's label word after the task "
            "template, as everywhere in hf_gradmm) or 'classifier' (AutoModelForSequenceClassification: the same body "
            "with a fresh classification head on the raw text, as run_glue.py trains it)."
        },
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (full); LoRA uses lora_lr."})
    lora_lr: float = field(default=5e-4, metadata={"help": "Learning rate of LoRA fine-tuning."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (adapters on every linear layer)."})
    max_steps: int = field(default=40, metadata={"help": "Optimizer steps per run (at most)."})
    batch_size: int = field(default=8, metadata={"help": "Training batch size."})
    eval_steps: int = field(default=10, metadata={"help": "Score on dev every N steps; the best is kept."})
    patience: int = field(default=2, metadata={"help": "Stop after N dev evaluations without improvement."})
    dev_examples: int = field(default=200, metadata={"help": "Real validation examples in the dev split (seeded)."})
    test_examples: int = field(default=0, metadata={"help": "Real test examples scored (seeded sample); 0 = all."})
    max_length: int = field(default=128, metadata={"help": "Tokens per training prompt (longer texts are cut)."})

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("learning_rate", "lora_lr"):
            check_number(self, name, 0, low_open=True)
        for name in ("lora_r", "max_steps", "batch_size", "eval_steps", "patience"):
            check_number(self, name, 1)
        for name in ("dev_examples", "test_examples"):
            check_number(self, name, 0, note="0 = all")
        check_number(self, "max_length", 2)


def _encode(tokenizer, task: TaskSpec, texts: list[str], labels: list[int], max_length: int) -> Dataset:
    """Prompt tokens then the label word; only the label word is a target (-100 elsewhere)."""
    words = label_token_ids(task, tokenizer)
    rows = {"input_ids": [], "labels": []}
    for text, label in zip(texts, labels):
        ids = tokenizer(task.format_prompt(text), add_special_tokens=True)["input_ids"]
        if len(ids) > max_length - 1:  # keep the start token(s) and the template's end
            ids = ids[:1] + ids[len(ids) - (max_length - 2) :]
        rows["input_ids"].append(ids + [words[label]])
        rows["labels"].append([-100] * len(ids) + [words[label]])
    return Dataset.from_dict(rows)


class _LeftPadCollator:
    """Left padding: the label word is at the last position of every row. Only the last two
    positions' logits are computed (``logits_to_keep=2``) with the labels cut to match: the
    model's shifted loss then scores exactly the label word from the prompt's last position,
    without a vocabulary-sized output at every position."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for r in rows:
            pad = width - len(r["input_ids"])
            out["input_ids"].append([self.pad_id] * pad + r["input_ids"])
            out["attention_mask"].append([0] * pad + [1] * len(r["input_ids"]))
            out["labels"].append(r["labels"][-2:])
        return {**{k: torch.tensor(v) for k, v in out.items()}, "logits_to_keep": 2}


class BestOnDevCallback(TrainerCallback):
    """Keeps the trainable parameters of the best dev evaluation (in memory) and stops after
    ``patience`` evaluations without improvement. ``restore`` loads the best state."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -math.inf
        self.best_step = 0
        self.state: dict[str, torch.Tensor] | None = None
        self.bad = 0
        self.history: list[tuple[int, float]] = []

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        acc = metrics["eval_accuracy"]
        self.history.append((state.global_step, acc))
        if acc > self.best:
            self.best, self.best_step, self.bad = acc, state.global_step, 0
            self.state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            self.bad += 1
            if self.bad >= self.patience:
                control.should_training_stop = True
        return control

    def restore(self, model) -> None:
        if self.state is not None:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in self.state.items():
                    params[name].copy_(value.to(params[name].device))


def recipe_arguments(
    config: FinetuneConfig,
    learning_rate: float,
    seed: int,
    has_dev: bool,
    output_dir: str,
    report_to: list[str] | None = None,
    **overrides,
) -> TrainingArguments:
    """The ``TrainingArguments`` of the recipe both heads share: ``max_steps`` at a constant learning
    rate, a dev evaluation every ``eval_steps``, seeded, no progress bar. With ``report_to``
    integrations it logs every step (and each dev evaluation) into ``output_dir`` (TensorBoard: its
    ``runs/``); ``overrides`` are the head's own fields."""
    logging = {"logging_steps": 1, "run_name": Path(output_dir).name} if report_to else {"logging_strategy": "no"}
    fields = dict(
        output_dir=output_dir,
        report_to=list(report_to or []),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=32,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        eval_strategy="steps" if has_dev else "no",
        eval_steps=config.eval_steps,
        save_strategy="no",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
    )
    return TrainingArguments(**{**fields, **logging, **overrides})


def _trainable_copy(model, config: FinetuneConfig):
    """A copy of ``model`` in training mode, all weights trainable (full) or LoRA adapters on every
    linear layer; and its learning rate."""
    model = copy.deepcopy(model)
    model.requires_grad_(config.finetune == "full")  # LoRA: peft makes only the adapters trainable
    model.train()
    if config.finetune != "lora":
        return model, config.learning_rate
    from peft import LoraConfig, get_peft_model  # peft loads only for LoRA runs

    lora = LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear")
    return get_peft_model(model, lora), config.lora_lr


def finetune(
    model,
    tokenizer,
    task: TaskSpec,
    texts: list[str],
    labels: list[int],
    dev: tuple[list[str], list[int]] | None,
    config: FinetuneConfig,
    seed: int,
    checkpoint_dir: str | None = None,
    save_steps: int = 0,
    use_cpu: bool = False,
    report_to: list[str] | None = None,
    report_dir: str | None = None,
):
    """Fine-tune a copy of ``model`` on (texts, labels); returns (model, dev history, best step).

    With a ``dev`` split the returned model carries the parameters of the best dev evaluation;
    without one it is the last step's, after exactly ``max_steps`` steps. ``checkpoint_dir``
    with ``save_steps``: the Trainer also saves ``checkpoint-<step>`` folders there (model or
    adapter only; the trajectory targets load them). ``use_cpu``: train on the CPU even with a
    GPU (the Trainer's device otherwise). ``report_to``: the Trainer's reporting integrations
    (``TrainingArguments.report_to``), logging every step and each dev evaluation, with
    ``report_dir`` as the Trainer's output folder (TensorBoard writes under ``report_dir/runs``).
    The input model is not changed. ``seed`` fixes the whole run, the LoRA adapters' initial
    values included, whatever ran before in the process.
    """
    set_seed(seed)  # the adapters are drawn before the Trainer seeds: without this, the draw is the process's
    model, lr = _trainable_copy(model, config)
    words = label_token_ids(task, tokenizer)
    train = _encode(tokenizer, task, texts, labels, config.max_length)
    dev_set = _encode(tokenizer, task, dev[0], dev[1], config.max_length) if dev is not None else None
    metric = evaluate.load(ACCURACY) if dev is not None else None  # scores dev evaluations only

    def last_position_label_logits(logits, labels):  # keep (N, C), not (N, T, V)
        return logits[:, -2, words]

    def compute_metrics(pred):
        # the label word is each row's last target (eval batches are padded with -100 on concatenation)
        refs = [words.index(int(row[row != -100][-1])) for row in pred.label_ids]
        return metric.compute(predictions=pred.predictions.argmax(-1).tolist(), references=refs)

    best = BestOnDevCallback(config.patience)
    with tempfile.TemporaryDirectory() as tmp:
        args = recipe_arguments(
            config,
            lr,
            seed,
            dev is not None,
            checkpoint_dir or report_dir or tmp,
            report_to,
            save_strategy="steps" if checkpoint_dir else "no",
            save_steps=save_steps or config.max_steps,
            save_only_model=True,
            remove_unused_columns=False,
            use_cpu=use_cpu,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=dev_set,
            data_collator=_LeftPadCollator(tokenizer.pad_token_id),
            compute_metrics=compute_metrics if dev is not None else None,
            preprocess_logits_for_metrics=last_position_label_logits if dev is not None else None,
            callbacks=[best] if dev is not None else [],
        )
        trainer.remove_callback(PrinterCallback)  # its train-summary line would land in a --json stdout
        trainer.train()
    best.restore(model)
    model.eval()
    return model, best.history, best.best_step
