"""The classifier-head recipe (``--head classifier``) and the export a user trains with a plain
``Trainer`` and ``AutoModelForSequenceClassification``, as run_glue.py does."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from hf_gradmm.classifier import classifier_correct, classifier_from_lm, finetune_classifier
from hf_gradmm.evaluation.harness import split_sample
from hf_gradmm.finetune import FinetuneConfig


def test_the_classifier_has_the_lms_body_and_a_seeded_fresh_head(tiny_llama, smollm2_tokenizer):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    clf = classifier_from_lm(tiny_llama, smollm2_tokenizer, 3, seed=0)
    body = clf.base_model.state_dict()
    assert all(torch.equal(body[k], v) for k, v in tiny_llama.base_model.state_dict().items())
    assert clf.score.weight.shape == (3, tiny_llama.config.hidden_size)
    assert torch.equal(clf.score.weight, classifier_from_lm(tiny_llama, smollm2_tokenizer, 3, seed=0).score.weight)
    assert not torch.equal(clf.score.weight, classifier_from_lm(tiny_llama, smollm2_tokenizer, 3, seed=1).score.weight)
    clf.base_model.embed_tokens.weight.data.zero_()  # a copy: the LM is untouched
    assert all(torch.equal(v, tiny_llama.state_dict()[k]) for k, v in before.items())


def test_head_classifier_refuses_prompting_methods(tmp_path):
    from hf_gradmm.config import GradMatchConfig
    from hf_gradmm.evaluation.harness import EvaluateArguments, run_evaluation

    args = EvaluateArguments(methods="zero_shot,random", output=str(tmp_path / "r.json"))
    with pytest.raises(ValueError, match="zero_shot prompt the LM and train nothing"):
        run_evaluation(GradMatchConfig().to_task(), args, FinetuneConfig(head="classifier"), models={})
    assert not list(tmp_path.iterdir())


def test_transfer_callback_trains_the_classifier_head(tiny_llama, smollm2_tokenizer, rotten_tomatoes, monkeypatch):
    """TransferCallback follows the recipe's head: with ``head="classifier"`` it trains a
    classification head (never the label-word recipe) and reports a test accuracy per seed."""
    from hf_gradmm.evaluation import TransferCallback, harness

    data, task = rotten_tomatoes
    called = []
    monkeypatch.setattr(harness, "finetune", lambda *a, **k: called.append("label-word"))
    recipe = FinetuneConfig(
        head="classifier", max_steps=2, eval_steps=1, batch_size=4, dev_examples=8, test_examples=12
    )
    callback = TransferCallback({"tiny": (tiny_llama, smollm2_tokenizer)}, task=task, recipe=recipe, seeds=2)
    texts, labels = split_sample(data["train"], 8, seed=0)
    scores = callback.evaluate(texts, labels)["tiny"]
    assert not called and len(scores["test_accuracy"]) == 2
    assert all(acc * 12 == round(acc * 12) and 0 <= acc <= 1 for acc in scores["test_accuracy"])


@pytest.mark.slow
def test_real_model_classifier_keeps_its_best_dev_checkpoint(smollm2, rotten_tomatoes):
    """On SmolLM2, LoRA: the returned classifier scores on dev exactly the best accuracy of its history."""
    model, tok = smollm2
    data, _ = rotten_tomatoes
    train = split_sample(data["train"], 16, seed=0)
    dev = split_sample(data["validation"], 24, seed=0)
    recipe = FinetuneConfig(finetune="lora", max_steps=6, eval_steps=2, patience=3, batch_size=8)
    clf, history, best_step = finetune_classifier(model, tok, 2, *train, dev, recipe, seed=0)
    assert [s for s, _ in history] == [2, 4, 6]
    best = max(acc for _, acc in history)
    assert best_step == next(s for s, acc in history if acc == best)
    correct = classifier_correct(clf, tok, *dev)
    assert sum(correct) / len(correct) == pytest.approx(best)


@pytest.mark.slow
def test_the_exported_train_csv_trains_a_sequence_classifier_with_a_plain_trainer(real_synthesis, smollm2, tmp_path):
    """The builder's train.csv (run_glue.py's columns) loads with `datasets`, tokenises, and trains
    AutoModelForSequenceClassification(SmolLM2) with an unmodified Trainer: the loss falls."""
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from hf_gradmm import BuilderConfig, SyntheticDatasetBuilder

    result, _ = real_synthesis
    model, tok = smollm2
    config = BuilderConfig(
        label_filter="off", min_words=1, max_repeat=100, near_duplicate_threshold=1.0, real_nll_examples=16
    )
    builder = SyntheticDatasetBuilder(result, config, model=model, processing_class=tok)
    builder.build()
    folder = builder.save(str(tmp_path / "ds"))
    frame = pd.read_csv(folder / "train.csv")
    assert list(frame.columns) == ["sentence", "label"] and len(frame) >= 4

    train = load_dataset("csv", data_files=str(folder / "train.csv"), split="train")
    train = train.map(lambda b: tok(b["sentence"], truncation=True, max_length=64), batched=True)
    torch.manual_seed(0)
    clf = AutoModelForSequenceClassification.from_pretrained(model.config._name_or_path, num_labels=2)
    clf.config.pad_token_id = tok.pad_token_id
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = Trainer(model=clf, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])
