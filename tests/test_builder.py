"""SyntheticDatasetBuilder: filtering, scoring, memorisation, exports and the card."""

from __future__ import annotations

import json

import pytest
import yaml
from datasets import load_dataset
from huggingface_hub import DatasetCard

from hf_gradmm.dataset.builder import BuilderConfig, SyntheticDatasetBuilder
from hf_gradmm.dataset.memorisation import memorisation_report


def test_pipeline_counts_drops_and_flags_copies(crafted_synthesis, tiny_llama, smollm2_tokenizer):
    path, data = crafted_synthesis
    builder = SyntheticDatasetBuilder(
        path, BuilderConfig(label_filter="off"), model=tiny_llama, processing_class=smollm2_tokenizer
    )
    built = builder.build()
    f = builder.report["filtering"]
    assert f["in"] == 8
    assert f["dropped"] == {"too_short": 1, "repetitive": 1, "duplicate": 1, "near_duplicate": 1}
    assert f["out"] == 4 == len(built["train"])
    train = built["train"]
    assert train.features["label"].names == ["negative", "positive"]
    kept = set(train["text"])
    assert "A gentle, funny film with a great cast and a warm heart." in kept  # the better-scored twin stays
    copied = [r for r in train if r["copied"]]
    assert len(copied) == 1 and copied[0]["text"] == " ".join(data["train"][0]["text"].split())
    assert builder.report["memorisation"]["flagged_copies"] == 1
    for r in train:
        assert r["score"] == pytest.approx(r["match_distance"] + r["nll"], rel=1e-5)


def test_top_n_balance_and_relabel(crafted_synthesis, tiny_llama, smollm2_tokenizer):
    path, _ = crafted_synthesis
    model = dict(model=tiny_llama, processing_class=smollm2_tokenizer)
    top = SyntheticDatasetBuilder(path, BuilderConfig(label_filter="off", top_n=1), **model).build()["train"]
    assert sorted(top["label"]) == [0, 1]
    relabel = SyntheticDatasetBuilder(path, BuilderConfig(label_filter="relabel"), **model)
    out = relabel.build()["train"]
    assert out["label"] == out["fewshot_label"]
    removed = SyntheticDatasetBuilder(path, BuilderConfig(label_filter="remove"), **model)
    kept = removed.build()["train"]
    assert kept["label"] == kept["fewshot_label"]
    assert removed.report["filtering"]["out"] + sum(removed.report["filtering"]["dropped"].values()) == 8
    balanced = SyntheticDatasetBuilder(path, BuilderConfig(label_filter="off", balance=True), **model)
    rows = balanced.build()["train"]
    means = [sum(s for s, y in zip(rows["score"], rows["label"]) if y == c) / rows["label"].count(c) for c in (0, 1)]
    worst_class = max(range(2), key=lambda c: means[c])
    assert rows["label"].count(worst_class) == 1 or means[worst_class] <= min(means) + 1e-6


def test_save_writes_dataset_card_exports_and_config(crafted_synthesis, tiny_llama, smollm2_tokenizer, tmp_path):
    path, _ = crafted_synthesis
    builder = SyntheticDatasetBuilder(
        path,
        BuilderConfig(label_filter="off", include_real_splits=True, license="apache-2.0"),
        model=tiny_llama,
        processing_class=smollm2_tokenizer,
    )
    folder = builder.save(tmp_path / "built")
    card = DatasetCard.load(folder / "README.md")
    assert {"synthetic", "gradmm", "hf_gradmm"} <= set(card.data.tags)
    assert card.data.size_categories == ["n<1K"] and card.data.task_categories == ["text-classification"]
    assert card.data.source_datasets == ["cornell-movie-review-data/rotten_tomatoes"]
    assert "no differential privacy" in card.text and "flagged as copies" in card.text
    assert "real examples" in card.text  # the real splits are declared as real
    csv = load_dataset("csv", data_files=str(folder / "train.csv"), split="train")
    assert csv.column_names == ["sentence", "label"] and len(csv) == 4
    config = yaml.safe_load((folder / "gradmm_config.yaml").read_text())
    assert config["synthesis"]["outer_steps"] == 4 and config["builder"]["label_filter"] == "off"
    built = builder.dataset
    assert set(built) == {"train", "validation", "test"}
    assert built["validation"].features == built["train"].features
    public = [json.loads(line) for line in (folder / "memorisation.jsonl").read_text().splitlines()]
    local = [json.loads(line) for line in (folder / "memorisation_with_real_texts.jsonl").read_text().splitlines()]
    assert len(public) == len(local) == 4
    assert all("nearest_real_text" not in row for row in public) and all("nearest_real_text" in row for row in local)


def test_memorisation_report_longest_run_and_8gram_share():
    real = ["the cast is great but the story is thin and slow", "nothing else here"]
    rows, summary = memorisation_report(
        ["honestly the cast is great but the story is thin, sadly", "a completely new sentence about food"], real
    )
    # "the cast is great but the story is thin": 9 words; 2 of the text's 4 word 8-grams are in the real text.
    assert rows[0]["longest_common_ngram"] == 9 and rows[0]["copied"] and rows[0]["nearest_real_index"] == 0
    assert rows[0]["ngram8_share"] == pytest.approx(2 / 4)
    assert rows[1]["longest_common_ngram"] == 0 and rows[1]["nearest_real_index"] == -1 and not rows[1]["copied"]
    assert summary["flagged_copies"] == 1


def test_not_a_synthesis_dir_is_refused_clearly(tmp_path):
    (tmp_path / "rounds").mkdir()
    with pytest.raises(ValueError, match="--resume"):
        SyntheticDatasetBuilder(tmp_path, BuilderConfig(), model=object(), processing_class=object())
    with pytest.raises(ValueError, match="label_filter"):
        BuilderConfig(label_filter="maybe")


@pytest.mark.slow
def test_contextual_calibration_removes_smollm2s_lean_to_one_label(smollm2, rotten_tomatoes):
    """On 40 balanced real validation texts, SmolLM2 with the task's demonstrations calls nearly
    everything positive; with contextual calibration its predictions are balanced and more accurate."""
    import random

    from hf_gradmm.lm import predict

    model, tok = smollm2
    data, task = rotten_tomatoes
    val = data["validation"]
    rng = random.Random(0)
    idx = [i for c in (0, 1) for i in rng.sample([j for j, y in enumerate(val["label"]) if y == c], 20)]
    texts, labels = [val[i]["text"] for i in idx], [val[i]["label"] for i in idx]
    raw = predict(model, tok, task, texts, task.demonstrations)
    cal = predict(model, tok, task, texts, task.demonstrations, calibrate=True)
    accuracy = [sum(p == y for p, y in zip(preds, labels)) / len(labels) for preds in (raw, cal)]
    assert sum(raw) / len(raw) > 0.85  # the lean being corrected
    assert 0.25 < sum(cal) / len(cal) < 0.75 and accuracy[1] > accuracy[0]


def test_the_card_says_how_the_texts_were_made(crafted_synthesis, tiny_llama, smollm2_tokenizer, tmp_path):
    """An ADMM run's texts were optimised and projected; the default's are the generator's own,
    chosen among the plainest: the card says which, from the run's config."""
    import shutil

    from hf_gradmm.config import GradMatchConfig

    path, _ = crafted_synthesis
    distances = dict(heldout_same_class=0.01, other_classes=0.5, model_sampled=0.08, gradmm_initial=0.03)
    calibration = {name: {**distances, "gradmm_final": 0.02} for name in ("negative", "positive")}
    (path / "metrics.json").write_text(json.dumps({"generator": "tiny", "calibration": calibration}))
    model = dict(model=tiny_llama, processing_class=smollm2_tokenizer)
    SyntheticDatasetBuilder(path, BuilderConfig(label_filter="off"), **model).save(tmp_path / "admm")
    text = DatasetCard.load(tmp_path / "admm" / "README.md").text
    assert "optimised so that fine-tuning" in text and "wrote itself" not in text and "taken at" not in text
    assert "| GRADMM first | GRADMM final |" in text and "| 0.0800 | 0.0300 | 0.0200 |" in text
    selected = tmp_path / "selected"
    shutil.copytree(path, selected)
    (selected / "config.yaml").write_text(yaml.safe_dump(GradMatchConfig(output_dir=str(selected)).to_dict()))
    SyntheticDatasetBuilder(selected, BuilderConfig(label_filter="off"), **model).save(tmp_path / "built")
    text = DatasetCard.load(tmp_path / "built" / "README.md").text
    assert "wrote itself from a class-naming prefix, not edited afterwards: of 300 written per round and class" in text
    assert "the 100 that a few-shot classifier" in text and "the 10 were kept for which fine-tuning" in text
    assert "optimised so that" not in text
    assert "gradients taken at `trajectory:4/4`" in text  # the default's target checkpoint
    # No steps: the chosen batch is the first and the last, so its calibration has one GRADMM column.
    assert "| model's own samples | GRADMM chosen |" in text and "| 0.0800 | 0.0200 |" in text
    assert "GRADMM first" not in text
    scored = tmp_path / "scored"  # chosen by another model's gradients: the card names that model
    shutil.copytree(path, scored)
    config = GradMatchConfig(output_dir=str(scored), select_scorer="gemma3-270m")
    (scored / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    SyntheticDatasetBuilder(scored, BuilderConfig(label_filter="off"), **model).save(tmp_path / "built_scored")
    text = DatasetCard.load(tmp_path / "built_scored" / "README.md").text
    assert "`tiny` wrote itself" in text and "the 10 were kept for which fine-tuning `gemma3-270m` on them" in text
