"""Sentence-pair tasks end to end: the registry (GLUE's pair tasks, STS-B refused, your own pair
columns), loading, the engine's pinned middle tokens, the built dataset's columns, the Hub push and
the evaluation. The real pair task is derived at run time from the offline Rotten Tomatoes corpus
(two reviews: same verdict?); nothing of it is committed."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import torch

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.tasks import get_task, load_task, resolve_task
from hf_gradmm.tasks.registry import PAIR_SEP, join_pair, split_pair

pytestmark = pytest.mark.usefixtures("models_restored")

GLUE_PAIRS = {
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}


@pytest.fixture(scope="module")
def pairs():
    """The derived offline pair task and its splits."""
    return load_task(get_task("rotten_tomatoes_pairs"))


# ---------------------------------------------------------------------------------------------
# Registry and loading
# ---------------------------------------------------------------------------------------------


def test_glue_pair_tasks_are_registered_with_their_columns_and_one_token_words(smollm2_tokenizer):
    from hf_gradmm.tasks import label_token_ids

    for name, columns in GLUE_PAIRS.items():
        spec = get_task(name)
        assert spec.is_pair and (spec.text_column, spec.text2_column) == columns and spec.pair_columns() == columns
        assert spec.hub_id == "nyu-mll/glue" and spec.hub_config == name and "validation" in spec.hub_splits["test"]
        assert len(set(label_token_ids(spec, smollm2_tokenizer))) == spec.num_labels
        assert "{text1}" in spec.template and "{text2}" in spec.template
    assert not get_task("cola").is_pair and get_task("sst2").hub_id == "nyu-mll/glue"
    assert get_task("mnli").hub_splits["test"] == "validation_matched"


def test_stsb_is_refused_as_regression():
    with pytest.raises(ValueError, match=r"(?s)regression.*--label-words"):
        resolve_task("stsb")


def test_pair_prompt_fills_both_slots_and_the_separator_round_trips():
    spec = get_task("rte")
    text = join_pair(" The cat sat. ", "A cat sat ")
    assert PAIR_SEP in text and split_pair(text) == ("The cat sat.", "A cat sat")
    assert spec.format_prompt(text) == "The cat sat. Question: A cat sat Yes or no? Answer:"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(task="rte", template="{text} Answer:"), r"\{text1\} then \{text2\}"),
        (dict(task="rotten_tomatoes", template="{text1} and {text2}"), r"one text column.*\{text\}"),
        (dict(task="rte", template="{text2} then {text1}:"), r"\{text1\} then \{text2\}"),
        (dict(task="rte", text_column="premise"), r"two columns"),
        (dict(task="rotten_tomatoes", text_column="a,b"), r"one-text task"),
        (dict(dataset="x.csv", text_column="a,b,c", label_words="no,yes"), r"names 3 columns"),
    ],
)
def test_pair_options_that_do_not_fit_are_refused(kwargs, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        resolve_task(**kwargs)


def test_second_seq_len_on_a_one_text_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"second segment.*--seq-len"):
        GradMatchConfig(output_dir=str(tmp_path / "o"), second_seq_len=8)
    assert not (tmp_path / "o").exists()


def test_the_derived_pair_task_pairs_each_review_once_with_its_verdicts(pairs, rotten_tomatoes):
    data, spec = pairs
    reviews, _ = rotten_tomatoes
    verdict = {t: y for split in reviews.values() for t, y in zip(split["text"], split["label"])}
    rows = [(split_pair(t), y) for split in data.values() for t, y in zip(split["text"], split["label"])]
    assert all(y == int(verdict[a] == verdict[b]) for (a, b), y in rows)
    used = [s for (a, b), _ in rows for s in (a, b)]
    assert len(used) == len(set(used)) > 10_000  # every review at most once
    share = sum(y for _, y in rows) / len(rows)
    assert 0.4 < share < 0.6 and spec.label_words == ("no", "yes")
    again, _ = load_task(get_task("rotten_tomatoes_pairs"))
    assert again["test"]["text"] == data["test"]["text"]  # a fixed pairing and split


def test_your_own_pair_columns_load_as_pairs(tmp_path, pairs):
    data, _ = pairs
    rows = [
        split_pair(t) + (("different", "same")[y],) for t, y in zip(data["train"]["text"][:40], data["train"]["label"])
    ]
    path = tmp_path / "nli.csv"
    pd.DataFrame(rows, columns=["premise", "hypothesis", "verdict"]).to_csv(path, index=False)
    spec = resolve_task(
        dataset=str(path), text_column="premise,hypothesis", label_column="verdict", label_words="no,yes"
    )
    assert spec.is_pair and spec.template == "{text1} Question: {text2} Yes or no? Answer:"
    assert spec.pair_columns() == ("sentence1", "sentence2")  # run_glue.py's names for your own data
    loaded, spec = load_task(spec)
    texts = set(loaded["train"]["text"]) | set(loaded["validation"]["text"]) | set(loaded["test"]["text"])
    assert texts == {join_pair(a, b) for a, b, _ in rows}
    with pytest.raises(ValueError, match=r"\['hypotheses'\] not found.*--text-column first,second"):
        load_task(
            resolve_task(
                dataset=str(path), text_column="premise,hypotheses", label_column="verdict", label_words="no,yes"
            )
        )
    bad = tmp_path / "bad.csv"
    pd.DataFrame(
        [["a ||| b", "c", "same"]] + [list(r) for r in rows], columns=["premise", "hypothesis", "verdict"]
    ).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"holds '\|\|\|'.*Replace it"):
        load_task(
            resolve_task(
                dataset=str(bad), text_column="premise,hypothesis", label_column="verdict", label_words="no,yes"
            )
        )


def test_a_pair_longer_than_the_context_is_cut_in_its_longer_segment(tiny_llama, smollm2_tokenizer):
    from hf_gradmm.targets.pool import context_length, fit_context

    task, context = get_task("rotten_tomatoes_pairs"), context_length(tiny_llama, smollm2_tokenizer)
    long, short = " ".join(["dull"] * 400), "A fine film."
    pool = {
        0: {"target": [join_pair(short, long), join_pair(short, short)], "heldout": []},
        1: {"target": [], "heldout": []},
    }
    with pytest.warns(UserWarning, match=r"1 of the 2 real examples"):
        fitted = fit_context(pool, smollm2_tokenizer, task, context)
    first, second = split_pair(fitted[0]["target"][0])
    assert first == short and second.split()[:3] == ["dull"] * 3
    assert len(smollm2_tokenizer(task.format_prompt(fitted[0]["target"][0]))["input_ids"]) <= context
    assert fitted[0]["target"][1] == pool[0]["target"][1]


# ---------------------------------------------------------------------------------------------
# The engine: the middle template tokens are pinned
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def pair_setup(pairs, tmp_path):
    from hf_gradmm.targets.setup import prepare

    data, task = pairs

    def make(model, tokenizer, **overrides):
        fields = dict(
            task="rotten_tomatoes_pairs",
            init="lm",  # the ADMM round; a test overrides it
            per_class=2,
            texts_per_round=2,
            target_examples=8,
            heldout_examples=2,
            seq_len=5,
            second_seq_len=4,
            outer_steps=2,
            inner_steps=2,
            refine_steps=6,
            projection_beams=2,
        )
        config = GradMatchConfig(output_dir=str(tmp_path / "run"), **{**fields, **overrides})
        return prepare(model, tokenizer, task, config, data["train"], tmp_path / "trajectory"), config

    return make


def test_pinned_layout_is_segment_middle_segment(tiny_llama, smollm2_tokenizer, pair_setup):
    from hf_gradmm.engine.objective import middle_ids

    prepared, _ = pair_setup(tiny_llama, smollm2_tokenizer)
    middle = middle_ids(prepared.task.template, smollm2_tokenizer)
    assert smollm2_tokenizer.decode(middle) == "\nReview B:"
    for c in (0, 1):
        assert prepared.pinned[c].tolist() == [-1] * 5 + middle + [-1] * 4
        assert prepared.seq_lens[c] == 9 + len(middle)


def test_auto_lengths_are_each_segments_mean(tiny_llama, smollm2_tokenizer, pair_setup):
    from hf_gradmm.engine.objective import middle_ids
    from hf_gradmm.lm import text_ids

    prepared, _ = pair_setup(tiny_llama, smollm2_tokenizer, seq_len=0, second_seq_len=0)
    middle = len(middle_ids(prepared.task.template, smollm2_tokenizer))
    for c, parts in prepared.pool.items():
        means = [
            max(2, round(sum(len(text_ids(smollm2_tokenizer, split_pair(t)[k])) for t in parts["target"]) / 8))
            for k in (0, 1)
        ]
        assert (
            prepared.pinned[c].tolist()
            == [-1] * means[0] + prepared.pinned[c][means[0] : means[0] + middle].tolist() + [-1] * means[1]
        )
        assert (prepared.pinned[c] >= 0).sum() == middle


@pytest.mark.parametrize("init", ["lm", "random", "real", "select"])
def test_every_round_text_keeps_the_middle_tokens(tiny_llama, smollm2_tokenizer, pair_setup, init):
    """Projection, beams, the x-step and the refinement never touch the pinned positions; the texts
    are the two free spans. 'select' is the default's shortlisted selection (the label margins of
    whole pairs), here with the ADMM round after it."""
    from hf_gradmm.engine.round import run_round

    shortlist = dict(select_pool=8, select_margin_keep=4) if init == "select" else {}
    prepared, config = pair_setup(tiny_llama, smollm2_tokenizer, init=init, **shortlist)
    pinned = prepared.pinned[1]
    record = run_round(prepared, config, 0, 1, 2)
    ids = torch.tensor(record.token_ids)
    assert (ids[:, pinned >= 0] == pinned[pinned >= 0]).all()
    for text, row in zip(record.texts, ids):
        first, second = split_pair(text)
        assert PAIR_SEP in text
        assert first == smollm2_tokenizer.decode(row[:5], skip_special_tokens=True).strip()
        assert second == smollm2_tokenizer.decode(row[-4:], skip_special_tokens=True).strip()
    assert record.final_distance <= record.admm_distance


def test_x_step_leaves_frozen_positions_where_they_are(tiny_llama, smollm2_tokenizer, pair_setup):
    from hf_gradmm.engine.round import x_step

    prepared, config = pair_setup(tiny_llama, smollm2_tokenizer, lm_coeff=0.0)
    objective, pinned = prepared.objectives[0], prepared.pinned[0]
    ids = torch.randint(100, 1000, (2, len(pinned)))
    ids[:, pinned >= 0] = pinned[pinned >= 0]
    start = objective.embed(ids).clone()
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.1)
    x_step(objective, x, optimizer, ids, start, torch.zeros_like(start), config, None, pinned >= 0)
    moved = (x.detach() - start).abs().amax(-1)[0]
    assert (moved[pinned >= 0] == 0).all() and (moved[pinned < 0] > 0).all()


def test_llm_baseline_pairs_keep_the_layout(tiny_llama, smollm2_tokenizer, pairs):
    from hf_gradmm.evaluation.baselines import llm_generated

    _, task = pairs
    texts, labels = llm_generated(tiny_llama, smollm2_tokenizer, task, 3, 0, (4, 3))
    assert labels == [0, 0, 0, 1, 1, 1] and all(PAIR_SEP in t for t in texts)
    assert all(len(smollm2_tokenizer.encode(" " + split_pair(t)[1], add_special_tokens=False)) <= 5 for t in texts)


def test_dp_pair_run_needs_the_second_length_too(tmp_path):
    common = dict(task="rotten_tomatoes_pairs", dp_epsilon=4.0, dp_delta=1e-5, heldout_examples=0, seq_len=8)
    with pytest.raises(ValueError, match=r"second_seq_len=0.*--second-seq-len N"):
        GradMatchConfig(output_dir=str(tmp_path / "o"), **common)
    GradMatchConfig(output_dir=str(tmp_path / "o"), second_seq_len=6, **common)


def test_a_dp_pair_synthesis_builds_with_both_columns_and_nothing_real(tiny_llama, smollm2_tokenizer, pairs, tmp_path):
    """DP on a pair task: the texts keep the layout, the build publishes the two columns and no
    comparison with the real pairs."""
    from hf_gradmm.dataset.builder import BuilderConfig, SyntheticDatasetBuilder
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    data, _ = pairs
    args = GradMatchConfig(
        init="lm",
        task="rotten_tomatoes_pairs", output_dir=str(tmp_path / "dp"), dp_epsilon=4.0, dp_delta=1e-5,
        heldout_examples=0, seq_len=4, second_seq_len=3, per_class=2, texts_per_round=2, outer_steps=1,
        inner_steps=1, topk=20, refine_steps=1, target_examples=8, disable_tqdm=True,
    )  # fmt: skip
    result = GradMatchSynthesizer(
        tiny_llama, args, train_dataset=data["train"], processing_class=smollm2_tokenizer
    ).train()
    assert result.metrics["dp"]["epsilon"] == 4.0 and all(PAIR_SEP in t.text for t in result.texts)
    builder = SyntheticDatasetBuilder(
        tmp_path / "dp",
        BuilderConfig(label_filter="off", min_words=0),
        model=tiny_llama,
        processing_class=smollm2_tokenizer,
    )
    built = builder.build()["train"]
    assert built["sentence1"] and set(built["copied"]) == {None} and builder.report["real_reference"] is None


# ---------------------------------------------------------------------------------------------
# On the real model: synthesize, build, push, evaluate
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pair_task_synthesized_built_pushed_and_evaluated_on_smollm2(smollm2, pairs, hub, tmp_path):
    """The issue's check: a pair task on real SmolLM2 through every stage. The built dataset and its
    run_glue.py files have sentence1/sentence2; the Hub copy reads back the same pairs; evaluate
    (label word and classifier head) trains on them and on real pairs."""
    from datasets import load_dataset

    from hf_gradmm.dataset.builder import BuilderConfig, SyntheticDatasetBuilder
    from hf_gradmm.evaluation import harness
    from hf_gradmm.finetune import FinetuneConfig
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    model, tok = smollm2
    data, task = pairs
    args = GradMatchConfig(
        init="lm",
        task="rotten_tomatoes_pairs",
        output_dir=str(tmp_path / "syn"),
        per_class=2,
        texts_per_round=2,
        outer_steps=1,
        inner_steps=2,
        refine_steps=2,
        projection_beams=2,
        seq_len=6,
        second_seq_len=5,
        target_examples=8,
        heldout_examples=2,
        disable_tqdm=True,
    )
    result = GradMatchSynthesizer(model, args, train_dataset=data["train"], processing_class=tok).train()
    assert len(result.texts) == 4 and all(PAIR_SEP in t.text for t in result.texts)
    assert set(result.metrics["calibration"]) == {"different", "same"}

    builder = SyntheticDatasetBuilder(
        result.output_dir, BuilderConfig(label_filter="off", real_nll_examples=16), model=model, processing_class=tok
    )
    folder = builder.save()
    train = builder.dataset["train"]
    assert {"sentence1", "sentence2", "text", "label"} <= set(train.column_names)
    assert [join_pair(a, b) for a, b in zip(train["sentence1"], train["sentence2"])] == train["text"]
    with open(folder / "train.csv") as fh:
        assert next(csv.reader(fh)) == ["sentence1", "sentence2", "label"]
    assert "`sentence1`, `sentence2`" in (folder / "README.md").read_text()

    builder.push_to_hub("someone/rt-pairs-gradmm")
    back = load_dataset("someone/rt-pairs-gradmm", cache_dir=str(tmp_path / "cache"))["train"]
    assert back["sentence1"] == train["sentence1"] and back["sentence2"] == train["sentence2"]
    assert back.features["label"].names == ["different", "same"]

    for head, methods in (("label-word", "random,llm,gradmm"), ("classifier", "gradmm")):
        evaluate = harness.EvaluateArguments(
            synthetic=f"gradmm={result.output_dir}",
            methods=methods,
            budget=2,
            draws=1,
            seeds=1,
            models="smollm2-135m",
            output=str(tmp_path / f"{head}.json"),
        )
        recipe = FinetuneConfig(max_steps=2, eval_steps=1, dev_examples=8, test_examples=16, finetune="lora", head=head)
        out = harness.run_evaluation(task, evaluate, recipe, models={"smollm2-135m": smollm2})
        assert out["task"] == "rotten_tomatoes_pairs" and out["test_examples"] == 16
        assert {r["method"] for r in out["runs"]} == set(methods.split(","))
        saved = [json.loads(line) for p in (tmp_path / f"{head}_training").rglob("*.jsonl") for line in p.open()]
        assert saved and all(PAIR_SEP in r["text"] for r in saved)
