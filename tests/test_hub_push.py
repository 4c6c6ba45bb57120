"""Pushing a built dataset through the real clients to a Hub-compatible server on 127.0.0.1."""

from __future__ import annotations

import hashlib

import pytest
from datasets import ClassLabel, Dataset, load_dataset, load_from_disk
from huggingface_hub import DatasetCard, hf_hub_download

from hf_gradmm.dataset.builder import BuilderConfig, SyntheticDatasetBuilder
from hf_gradmm.dataset.hub import HubPushError, push_dataset_folder


@pytest.fixture()
def built(crafted_synthesis, tiny_llama, smollm2_tokenizer, tmp_path):
    path, _ = crafted_synthesis
    builder = SyntheticDatasetBuilder(
        path, BuilderConfig(label_filter="off"), model=tiny_llama, processing_class=smollm2_tokenizer
    )
    return builder.save(tmp_path / "built"), builder


def _digest(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_push_then_load_dataset_reads_the_same_rows_and_card(hub, built, tmp_path):
    folder, builder = built
    url = push_dataset_folder(folder, "someone/rt-gradmm", private=True)
    assert url == f"{hub.endpoint}/datasets/someone/rt-gradmm"
    back = load_dataset("someone/rt-gradmm", cache_dir=str(tmp_path / "cache"))
    local = builder.dataset["train"]
    assert back["train"].features["label"] == ClassLabel(names=["negative", "positive"])
    assert back["train"]["text"] == local["text"] and back["train"]["label"] == local["label"]
    card = DatasetCard.load("someone/rt-gradmm", repo_type="dataset")
    assert {"synthetic", "gradmm", "hf_gradmm"} <= set(card.data.tags)
    assert card.data.to_dict()["dataset_info"]["features"]  # what push_to_hub wrote is kept
    assert "Memorisation" in card.text
    files = hub.repo_files("someone/rt-gradmm")
    assert {"README.md", "gradmm_config.yaml", "build_report.json", "memorisation.jsonl"} <= set(files)
    assert "memorisation_with_real_texts.jsonl" not in files  # real training texts stay local
    pushed = hf_hub_download("someone/rt-gradmm", "memorisation.jsonl", repo_type="dataset")
    assert "nearest_real_text" not in open(pushed).read()
    config = hf_hub_download("someone/rt-gradmm", "gradmm_config.yaml", repo_type="dataset")
    assert open(config).read() == (folder / "gradmm_config.yaml").read_text()


def test_push_without_token_is_refused_and_nothing_moves(hub, built, monkeypatch):
    folder, _ = built
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("hf_gradmm.dataset.hub.get_token", lambda: None)
    with pytest.raises(HubPushError, match="No Hub token"):
        push_dataset_folder(folder, "someone/rt-gradmm")
    assert not any(method == "POST" for method, _ in hub.requests)


def test_repo_with_another_schema_is_refused(hub, built):
    folder, _ = built
    Dataset.from_dict({"question": ["q"], "answer": ["a"]}).push_to_hub("someone/other")
    with pytest.raises(HubPushError, match="other columns"):
        push_dataset_folder(folder, "someone/other")
    assert (
        "README.md" not in hub.repo_files("someone/other")
        or "gradmm" not in hub.repo_files("someone/other").get("README.md", b"").decode()
    )


def test_failed_push_loses_nothing_locally_and_a_retry_succeeds(hub, built):
    folder, builder = built
    before = _digest(folder)
    hub.fail_commits = True
    with pytest.raises(HubPushError, match="stays in"):
        push_dataset_folder(folder, "someone/rt-gradmm")
    assert _digest(folder) == before
    hub.fail_commits = False
    push_dataset_folder(folder, "someone/rt-gradmm")
    assert _digest(folder) == before


def test_unreachable_hub_says_so(hub, built, monkeypatch):
    folder, _ = built
    hub.stop()  # the endpoint now refuses connections
    with pytest.raises(HubPushError, match="Cannot reach the Hub"):
        push_dataset_folder(folder, "someone/rt-gradmm")


@pytest.mark.slow
def test_cli_push_of_a_real_synthesis_output(hub, real_synthesis, tmp_path):
    """The issue's check: ``hf-gradmm push DIR --repo-id someone/rt-gradmm`` on a SmolLM2 synthesis
    output builds it (label filter, scores, memorisation, card) and pushes it; ``load_dataset``
    through the same endpoint returns the same texts and labels with the class names."""
    import os
    import subprocess
    import sys

    result, _ = real_synthesis
    cmd = [sys.executable, "-m", "hf_gradmm.cli", "push", result.output_dir, "--repo-id", "someone/rt-gradmm"]
    cmd += ["--real-nll-examples", "16"]  # the card's reference perplexity from 16 real texts, not 200
    run = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    built = load_from_disk(os.path.join(result.output_dir, "dataset", "data"))["train"]
    assert 0 < len(built) <= 8 and set(built["text"]) <= {t.text for t in result.texts}
    back = load_dataset("someone/rt-gradmm", cache_dir=str(tmp_path / "cache"))["train"]
    assert back["text"] == built["text"] and back["label"] == built["label"]
    assert back.features["label"].names == ["negative", "positive"]
    card = DatasetCard.load("someone/rt-gradmm", repo_type="dataset")
    assert card.data.to_dict()["pretty_name"].startswith("GRADMM synthetic rotten_tomatoes")
    assert "smollm2-135m" in card.text
