"""Refusals about the data, the model name, the lengths and the label words (issue 18): each names the
problem and the fix, comes before the heavy work (before a model loads where it can) and leaves files as
they were. CLI checks go through ``main([...])`` with a tiny random model saved with its tokenizer."""

from __future__ import annotations

import time
import warnings

import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from hf_gradmm.arguments import TaskArguments
from hf_gradmm.cli.main import main
from hf_gradmm.models import check_model_name, load_model_and_tokenizer
from hf_gradmm.targets.pool import AUTO_SEQ_LEN_CAP, check_pool, context_length, fit_context, text_lengths
from hf_gradmm.tasks import get_task, label_token_ids, load_task, resolve_task


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_llama, smollm2_tokenizer):
    folder = tmp_path / "tiny"
    tiny_llama.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def _rows(per_class: dict[str, int]) -> pd.DataFrame:
    """Made-up rows: ``n`` short texts per label."""
    return pd.DataFrame(
        [
            {"text": f"made-up {label} example number {i}", "label": label}
            for label, n in per_class.items()
            for i in range(n)
        ]
    )


def _snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- item 4: empty and undecodable files, and --encoding -----------------------------------------------------


def test_zero_byte_csv_says_it_is_empty_and_what_a_valid_file_looks_like(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "empty.csv").write_bytes(b"")
    args = [
        "preview",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(data / "empty.csv"),
        "--label-words",
        "bad,great",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{data / 'empty.csv'} is empty (0 bytes)" in err and "text,label" in err and "--text-column" in err
    assert "Traceback" not in err and "DatasetGenerationError" not in err
    assert _snapshot(data) == {"empty.csv": b""}


def test_non_utf8_csv_names_the_byte_and_line_and_encoding_reads_it(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "latin.csv"
    frame = _rows({"neg": 10, "pos": 10})
    frame.loc[3, "text"] = "made-up caf\u00e9 example"
    frame.to_csv(path, index=False, encoding="latin-1")
    raw = path.read_bytes()
    offset = raw.index(b"caf\xe9") + 3
    line = raw[:offset].count(b"\n") + 1
    args = ["preview", "--model", str(tiny_model_dir), "--dataset", str(path), "--label-words", "bad,great"]
    assert main([*args, "--num-examples", "1"]) == 1
    err = capsys.readouterr().err
    assert f"{path} is not valid utf-8 text: byte 0xe9 at offset {offset} (line {line}," in err
    assert "--encoding latin-1" in err and "Traceback" not in err
    assert _snapshot(data) == {"latin.csv": raw}

    assert main([*args, "--num-examples", "1", "--encoding", "latin-1"]) == 0  # the fix works
    capsys.readouterr()
    loaded, spec = load_task(resolve_task(dataset=str(path), label_words="bad,great", encoding="latin-1"))
    assert spec.encoding == "latin-1"
    assert "made-up caf\u00e9 example" in [t for split in loaded.values() for t in split["text"]]
    assert _snapshot(data) == {"latin.csv": raw}


def test_malformed_csv_is_a_short_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nfine,pos\none, two,neg\n")  # the last row has three fields
    with pytest.raises(
        ValueError, match=r"(?s)bad\.csv: could not be read as CSV .*Expected 2 fields in line 3.*header row.*in quotes"
    ):
        load_task(resolve_task(dataset=str(path), label_words="bad,great"))
    assert path.read_text() == "text,label\nfine,pos\none, two,neg\n"


def test_unknown_encoding_is_refused_before_loading(tmp_path):
    path = tmp_path / "r.csv"
    _rows({"neg": 10, "pos": 10}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"--encoding 'latin-99' is not an encoding Python knows; e\.g\. utf-8"):
        TaskArguments(dataset=str(path), label_words="bad,great", encoding="latin-99")


def test_missing_data_file_is_named_as_a_file_not_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file .* read as a local file"):
        TaskArguments(dataset=str(tmp_path / "nothere.csv"), label_words="bad,great")


# ---- item 7: unknown --model and --task names ----------------------------------------------------------------


def test_unknown_model_offline_fails_fast_listing_the_registered_ones(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"nor a local folder \(.*no.such does not exist\)\. Nor is it a Hub model id"):
        load_model_and_tokenizer(str(tmp_path / "no" / "such"))
    assert main(["preview", "--model", "smolm2"]) == 1
    out, err = capsys.readouterr()
    assert "task rotten_tomatoes" not in out  # refused before the data loads, without retries
    assert "'smolm2' is neither a registered model (gemma3-270m, smollm2-135m) nor a local folder" in err
    assert "Did you mean 'smollm2-135m'?" in err and "HF_HUB_OFFLINE=1" in err
    assert err.index("local folder") < err.index("Hub model id")  # the registry and folders first, then the Hub


def test_unknown_model_with_an_unreachable_hub_fails_fast(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(ConnectionError) as err:
        load_model_and_tokenizer("hf-gradmm-tests/definitely-not-a-model")
    assert time.perf_counter() - start < 30  # one failed request, not transformers' five retries (~46 s)
    msg = str(err.value)
    assert "neither a registered model" in msg and "http://127.0.0.1:9, which cannot be reached" in msg
    assert "HF_ENDPOINT" in msg


def test_hub_models_still_load_online_and_from_the_cache_offline(hub, tiny_model_dir, monkeypatch):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo("someone/tiny-lm")
    api.upload_folder(folder_path=str(tiny_model_dir), repo_id="someone/tiny-lm")
    model, tokenizer = load_model_and_tokenizer("someone/tiny-lm")
    assert model.config.hidden_size == 32 and tokenizer.pad_token is not None
    asked = [r for r in hub.requests if r[1].startswith("/api/models/someone/tiny-lm")]
    assert asked  # the loader asked the Hub once
    assert check_model_name("someone/tiny-lm") is False  # the CLI, the synthesizer and the loader all check it
    assert [r for r in hub.requests if r[1].startswith("/api/models/someone/tiny-lm")] == asked  # asked once
    with pytest.raises(OSError, match=r"neither a registered model .* Nor is it a model on the Hub at .*not found"):
        load_model_and_tokenizer("someone/nothing-here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # now offline: the cached copy loads, without a request
    before = len(hub.requests)
    model, _ = load_model_and_tokenizer("someone/tiny-lm")
    assert model.config.hidden_size == 32 and len(hub.requests) == before


def test_unknown_task_is_refused_when_parsed_before_the_model_loads(tmp_path, capsys):
    not_a_model = tmp_path / "empty-folder"  # would fail to load: the task error shows it never got there
    not_a_model.mkdir()
    with pytest.raises(ValueError, match=r"Unknown task 'rotten_tomatos'\. Did you mean 'rotten_tomatoes'\?"):
        TaskArguments(task="rotten_tomatos")
    assert main(["bench", "step", "--model", str(not_a_model), "--task", "rotten_tomatos"]) == 1
    err = capsys.readouterr().err
    assert "Unknown task 'rotten_tomatos'" in err and "Registered tasks: ag_news, cola, emotion" in err


# ---- item 8: classes too small for the carved splits, one class only --------------------------------------------


def test_class_too_small_to_carve_the_splits_is_named(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _rows({"pos": 3, "neg": 2}).to_csv(data / "five.csv", index=False)
    before = _snapshot(data)
    args = [
        "preview",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(data / "five.csv"),
        "--label-words",
        "bad,great",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "class(es) {'neg': 2} (examples per class) are too small to carve the test and validation" in err
    assert "each class needs at least 3 examples. Add examples of 'neg'" in err
    assert _snapshot(data) == before


def test_too_few_rows_for_the_carved_splits_names_the_minimum_and_it_is_the_splitters(tmp_path):
    path = tmp_path / "six.csv"
    _rows({"neg": 3, "pos": 3}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"6 examples are too few to carve .* give at least 12 examples"):
        load_task(resolve_task(dataset=str(path), label_words="bad,great"))
    _rows({"neg": 6, "pos": 6}).to_csv(path, index=False)  # the minimum the message names loads
    data, _ = load_task(resolve_task(dataset=str(path), label_words="bad,great"))
    assert sum(len(split) for split in data.values()) == 12


def test_one_class_is_refused_naming_it_and_the_label_column(tmp_path):
    path = tmp_path / "one.csv"
    _rows({"pos": 20}).to_csv(path, index=False)
    with pytest.raises(
        ValueError, match=r"label column 'label' holds one class only, 'pos' \(20 rows\).*--label-column"
    ):
        load_task(resolve_task(dataset=str(path), label_words="bad,great"))
    with pytest.raises(
        ValueError, match=r"class\(es\) \['neg'\] have no training example; the label column 'label' holds only"
    ):
        load_task(resolve_task(dataset=str(path), label_words="bad,great", label_names="neg,pos"))
    with pytest.raises(ValueError, match=r"at least two classes, but --label-words gives one \('great'\)"):
        resolve_task(dataset=str(path), label_words="great")


def test_target_pool_too_small_names_the_class_and_the_flags():
    task = get_task("rotten_tomatoes")
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(task.label_names))})
    source = Dataset.from_dict({"text": [f"t{i}" for i in range(30)], "label": [0] * 4 + [1] * 26}, features=features)
    with pytest.raises(ValueError) as err:
        check_pool(source, task, target_examples=20, heldout_examples=5)
    msg = str(err.value)
    assert "{'negative': 4, 'positive': 26}" not in msg and "{'negative': 4}" in msg
    assert "20 + 5 = 25" in msg and "--target-examples 4 --heldout-examples 0" in msg
    check_pool(source, task, target_examples=4, heldout_examples=0)  # what it suggests passes


# ---- item 10: long texts ------------------------------------------------------------------------------------


def _long(n_words: int, label: str) -> str:
    return " ".join(f"{label}{i % 50}" for i in range(n_words))


def test_automatic_seq_len_is_capped_with_a_warning(smollm2_tokenizer):
    pool = {0: {"target": [_long(400, "bad")] * 2, "heldout": []}, 1: {"target": ["a short one"], "heldout": []}}
    with pytest.warns(UserWarning, match=rf"seq_len 0 \(auto\).*'negative'.*capped at {AUTO_SEQ_LEN_CAP}.*--seq-len"):
        lengths = text_lengths(pool, smollm2_tokenizer, 0, ["negative", "positive"])
    assert lengths[0] == AUTO_SEQ_LEN_CAP and lengths[1] < AUTO_SEQ_LEN_CAP
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit length is the user's: no cap, no warning
        assert text_lengths(pool, smollm2_tokenizer, 300) == {0: 300, 1: 300}


def test_target_examples_longer_than_the_context_are_cut_with_a_count(tiny_llama, smollm2_tokenizer):
    task = get_task("rotten_tomatoes")
    context = context_length(tiny_llama, smollm2_tokenizer)
    assert context == 256  # the tiny model's positions; the tokenizer's ~1e30 "no limit" is left out
    pool = {
        0: {"target": [_long(600, "bad"), "short"], "heldout": [_long(600, "dull")]},
        1: {"target": ["fine"], "heldout": []},
    }
    with pytest.warns(UserWarning, match=r"2 of the 4 real examples in the target pool \(negative 2\).*context of 256"):
        fitted = fit_context(pool, smollm2_tokenizer, task, context)
    for parts in fitted.values():
        for text in parts["target"] + parts["heldout"]:
            assert len(smollm2_tokenizer(task.format_prompt(text))["input_ids"]) <= context
    assert fitted[0]["target"][1] == "short" and fitted[1] == pool[1]
    assert fitted[0]["target"][0].split()[:5] == pool[0]["target"][0].split()[:5]  # the start is kept


@pytest.mark.usefixtures("models_restored")
def test_prepare_with_long_real_texts_warns_caps_and_cuts(tiny_llama, smollm2_tokenizer, tmp_path):
    from hf_gradmm.config import GradMatchConfig
    from hf_gradmm.targets.setup import prepare

    task = get_task("rotten_tomatoes")
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(task.label_names))})
    texts = [_long(600, "bad"), _long(650, "dull"), _long(600, "great"), _long(650, "fine")]
    source = Dataset.from_dict({"text": texts, "label": [0, 0, 1, 1]}, features=features)
    config = GradMatchConfig(output_dir=str(tmp_path / "run"), target_examples=2, heldout_examples=0, seq_len=0)
    with pytest.warns(UserWarning) as caught:
        prepared = prepare(tiny_llama, smollm2_tokenizer, task, config, source, tmp_path / "trajectory")
    messages = " ".join(str(w.message) for w in caught)
    assert "4 of the 4 real examples in the target pool" in messages and f"capped at {AUTO_SEQ_LEN_CAP}" in messages
    assert prepared.seq_lens == {0: AUTO_SEQ_LEN_CAP, 1: AUTO_SEQ_LEN_CAP}


# ---- item 11: a multi-token label word gets single-token suggestions ----------------------------------------------


def test_multi_token_label_word_suggests_single_token_words(smollm2_tokenizer, tiny_model_dir, capsys):
    spec = resolve_task("rotten_tomatoes", label_words="unwatchable,great")
    with pytest.raises(ValueError) as err:
        label_token_ids(spec, smollm2_tokenizer)
    msg = str(err.value)
    assert "'unwatchable' of class 'negative' is 3 tokens" in msg
    words = msg.split("Single-token words to try: ")[1].split(".")[0].split(", ")
    assert words[:3] == ["bad", "terrible", "awful"] and "great" not in words  # negative words first; not taken
    assert all(len(smollm2_tokenizer.encode(" " + w, add_special_tokens=False)) == 1 for w in words)
    assert main(["preview", "--model", str(tiny_model_dir), "--label-words", "unwatchable,great"]) == 1
    assert "Single-token words to try: bad, terrible, awful" in capsys.readouterr().err
