"""The task registry and loaders, on the real offline corpora and on files made from them."""

from __future__ import annotations

import pandas as pd
import pytest

from hf_gradmm.tasks import TASKS, get_task, label_token_ids, load_task, resolve_task
from hf_gradmm.tasks.offline import clean_tweet
from hf_gradmm.tasks.registry import check_template


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError) as err:
        get_task("mnli_sarcasm")
    for name in ("rotten_tomatoes", "tweet_sentiment", "sst2", "emotion", "imdb", "ag_news", "--dataset"):
        assert name in str(err.value)


def test_registered_tasks_are_complete():
    for spec in TASKS.values():
        assert len(spec.label_words) == len(spec.label_names) == len(spec.class_descriptions)
        check_template(spec)  # {text}, or {text1} then {text2} for a pair
        assert spec.sources()
        assert spec.default_source in spec.sources()


def test_every_registered_label_word_is_one_smollm2_token(smollm2_tokenizer):
    for spec in TASKS.values():
        ids = label_token_ids(spec, smollm2_tokenizer)
        assert len(set(ids)) == spec.num_labels


def test_multi_token_label_word_is_refused_with_alternatives(smollm2_tokenizer):
    spec = resolve_task("rotten_tomatoes", label_words="Terrible,great")
    with pytest.raises(ValueError) as err:
        label_token_ids(spec, smollm2_tokenizer)
    msg = str(err.value)
    assert "'Terrible'" in msg and "negative" in msg and "--label-words" in msg
    assert "Single-token variants" in msg  # e.g. ' terrible' is one token where ' Terrible' is not


def test_label_word_count_must_match_classes():
    with pytest.raises(ValueError, match="one word per class"):
        resolve_task("tweet_sentiment", label_words="bad,great")


def test_rotten_tomatoes_offline_splits(rotten_tomatoes):
    data, spec = rotten_tomatoes
    assert list(data) == ["train", "validation", "test"]
    assert data["train"].features["label"].names == ["negative", "positive"]
    sizes = {k: len(v) for k, v in data.items()}
    assert sizes["train"] > 10_000 and sizes["validation"] > 1000 and sizes["test"] > 1000
    texts = {k: set(v["text"]) for k, v in data.items()}
    assert sum(len(t) for t in texts.values()) == sum(sizes.values())  # deduplicated
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    share = sum(data["test"]["label"]) / sizes["test"]
    assert 0.5 < share < 0.65  # stratified: the corpus is ~58% fresh
    again, _ = load_task(get_task("rotten_tomatoes"))
    assert again["test"]["text"] == data["test"]["text"]  # fixed seeded splits


def test_tweet_sentiment_offline_is_clean():
    data, spec = load_task(get_task("tweet_sentiment"))
    assert data["train"].features["label"].names == ["negative", "neutral", "positive"]
    all_texts = [t for split in data.values() for t in split["text"]]
    assert len(all_texts) == len(set(all_texts)) > 30_000
    assert all(t.isascii() for t in all_texts)  # encoding debris repaired or removed
    assert not any("&amp;" in t or "http://" in t for t in all_texts)


def test_clean_tweet_repairs_and_drops():
    assert clean_tweet("I donÕ¢_\x8aÎ_\x86¢t want either!") == "I don't want either!"
    assert clean_tweet("Drunk &amp; crazed drivers http://t.co/x") == "Drunk & crazed drivers"
    assert clean_tweet("Õ\x8d\x81ô_\x86¢ë\x8fÕ¢\x81Ð\x81\x90ÕËëôë\x8f wow") is None  # mostly debris
    assert clean_tweet("ok then") is None  # too short to be an example


@pytest.fixture()
def review_sample(rotten_tomatoes):
    data, _ = rotten_tomatoes
    return data["train"].select(range(60)).to_pandas()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_custom_local_file_with_string_labels(tmp_path, review_sample, suffix):
    frame = pd.DataFrame(
        {
            "review": review_sample["text"],
            "verdict": review_sample["label"].map({0: "rotten", 1: "fresh"}),
        }
    )
    path = tmp_path / f"reviews{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    spec = resolve_task(
        dataset=str(path),
        text_column="review",
        label_column="verdict",
        label_words="great,bad",
        label_names="fresh,rotten",
    )
    data, spec = load_task(spec)
    assert spec.default_source == "local" and spec.label_names == ("fresh", "rotten")
    assert sum(len(v) for v in data.values()) == 60
    row = data["train"][0]
    original = frame.set_index("review").loc[row["text"], "verdict"]
    assert spec.label_names[row["label"]] == original


def test_custom_file_names_classes_from_data(tmp_path, review_sample):
    path = tmp_path / "r.csv"
    review_sample.assign(label=review_sample["label"].map({0: "neg", 1: "pos"})).to_csv(path, index=False)
    data, spec = load_task(resolve_task(dataset=str(path), label_words="bad,great"))
    assert spec.label_names == ("neg", "pos")
    assert data["train"].features["label"].names == ["neg", "pos"]


def test_custom_file_missing_column_names_the_columns(tmp_path, review_sample):
    path = tmp_path / "r.csv"
    review_sample.to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        load_task(resolve_task(dataset=str(path), text_column="sentence", label_words="bad,great"))
    assert (
        "'sentence'" in str(err.value) and "available columns" in str(err.value) and "--text-column" in str(err.value)
    )


def test_custom_file_without_label_words_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--label-words"):
        resolve_task(dataset=str(tmp_path / "x.csv"))


def test_empty_dataset_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    with pytest.raises(ValueError, match="(?i)empty|no train"):
        load_task(resolve_task(dataset=str(path), label_words="bad,great", label_names="neg,pos"))


def test_class_without_examples_is_refused(tmp_path, review_sample):
    path = tmp_path / "r.csv"
    review_sample.assign(label=0).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no training example"):
        load_task(resolve_task(dataset=str(path), label_words="bad,great", label_names="neg,pos"))


def test_hub_source_goes_through_the_hub_client(monkeypatch):
    """Asking for the Hub source really calls datasets.load_dataset with the Hub id."""
    import datasets

    seen = {}

    def fake_load(path, name=None, **kw):
        seen["path"], seen["name"] = path, name
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr("hf_gradmm.tasks.loading._require_hub", lambda repo_id: None)  # the probe: tested below
    with pytest.raises(ConnectionError):
        load_task(get_task("rotten_tomatoes"), source="hub")
    assert seen == {"path": "cornell-movie-review-data/rotten_tomatoes", "name": None}
    with pytest.raises(ConnectionError):
        load_task(get_task("sst2"))
    assert seen == {"path": "nyu-mll/glue", "name": "sst2"}
    with pytest.raises(ConnectionError):
        load_task(get_task("mnli"))
    assert seen == {"path": "nyu-mll/glue", "name": "mnli"}


def test_unreachable_or_missing_hub_dataset_fails_fast_with_the_fix(hub, monkeypatch):
    """One request decides: a missing repo names the id; an unreachable endpoint names the fixes."""
    import time

    from huggingface_hub import constants

    with pytest.raises(ValueError, match="'someone/nothing-here' was not found"):
        load_task(resolve_task("custom", dataset="someone/nothing-here", label_words="bad,great"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="Cannot reach the Hub at http://127.0.0.1:9.*HF_HUB_OFFLINE=1"):
        load_task(get_task("sst2"))
    assert time.perf_counter() - start < 15
