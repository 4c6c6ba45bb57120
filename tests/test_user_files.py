"""The user's own files as they come (run_glue.py style): one file per split, several files per
split, --task-name, --domain and --class-descriptions. The files are derived at run time from
the offline Rotten Tomatoes corpus (nothing of it is committed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.tasks import load_task, resolve_task


def _write(path, split, n: int, start: int = 0) -> set[str]:
    """``n`` examples of ``split`` (balanced, from ``start``) as a CSV with string labels; returns the texts."""
    rows = [(r["text"], ("negative", "positive")[r["label"]]) for r in split]
    neg = [r for r in rows if r[1] == "negative"][start : start + n // 2]
    pos = [r for r in rows if r[1] == "positive"][start : start + n - n // 2]
    pd.DataFrame(neg + pos, columns=["review", "verdict"]).to_csv(path, index=False)
    return {t for t, _ in neg + pos}


@pytest.fixture
def user_files(rotten_tomatoes, tmp_path):
    """train.csv (60), validation.csv (20), test.csv (20), disjoint, from the task's own splits."""
    data, _ = rotten_tomatoes
    paths = {s: tmp_path / f"{s}.csv" for s in ("train", "validation", "test")}
    texts = {
        "train": _write(paths["train"], data["train"], 60),
        "validation": _write(paths["validation"], data["validation"], 20),
        "test": _write(paths["test"], data["test"], 20),
    }
    return paths, texts


COLUMNS = dict(text_column="review", label_column="verdict", label_words="bad,great")


def test_each_split_is_the_users_file_and_nothing_is_carved(user_files):
    paths, texts = user_files
    spec = resolve_task(
        train_files=str(paths["train"]),
        validation_files=[str(paths["validation"])],
        test_files=[str(paths["test"])],
        **COLUMNS,
    )
    data, spec = load_task(spec)
    assert {s: set(data[s]["text"]) for s in data} == texts
    assert spec.name == "train" and spec.custom and spec.label_names == ("negative", "positive")


def test_a_missing_split_is_carved_from_train_only(user_files, tmp_path):
    paths, texts = user_files
    data, _ = load_task(resolve_task(train_files=[str(paths["train"])], test_files=[str(paths["test"])], **COLUMNS))
    assert set(data["test"]["text"]) == texts["test"]
    assert set(data["validation"]["text"]) | set(data["train"]["text"]) == texts["train"]
    assert not set(data["validation"]["text"]) & set(data["train"]["text"]) and len(data["validation"]) >= 6


def test_several_files_per_split(user_files, rotten_tomatoes, tmp_path):
    paths, texts = user_files
    data, _ = rotten_tomatoes
    extra = _write(tmp_path / "more.csv", data["train"], 10, start=100)
    spec = resolve_task(
        train_files=[str(paths["train"]), str(tmp_path / "more.csv")],
        validation_files=[str(paths["validation"])],
        test_files=[str(paths["test"])],
        **COLUMNS,
    )
    loaded, _ = load_task(spec)
    assert set(loaded["train"]["text"]) == texts["train"] | extra


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(dataset="{train}", train_files="{train}"), "both name the training data"),
        (dict(validation_files="{validation}"), "need --train-file"),
        (dict(train_files="{train}", test_files="nope.csv"), "--test-file 'nope.csv': no such file"),
        (dict(train_files="{tmp}"), "is a folder, not a file"),
        (dict(task="rotten_tomatoes", task_name="mine"), "needs --dataset or --train-file"),
        (dict(task="rotten_tomatoes", class_descriptions="bad"), "has 1 entries"),
        (dict(task="rotten_tomatoes", domain="{x}"), "plain words"),
    ],
)
def test_refusals_name_the_problem_and_the_fix(user_files, tmp_path, kwargs, expected):
    paths, _ = user_files
    where = {"train": str(paths["train"]), "validation": str(paths["validation"]), "tmp": str(tmp_path), "x": "{x}"}
    kwargs = {k: v.format(**where) if isinstance(v, str) else v for k, v in kwargs.items()}
    words = {} if kwargs.get("task") else COLUMNS
    with pytest.raises((ValueError, FileNotFoundError), match=expected.replace("(", r"\(")):
        resolve_task(**{**words, **kwargs})


def test_class_descriptions_checked_against_the_classes_in_the_data(user_files):
    paths, _ = user_files
    spec = resolve_task(train_files=[str(paths["train"])], class_descriptions="harsh,warm,odd", **COLUMNS)
    with pytest.raises(ValueError, match="--class-descriptions gives 3"):
        load_task(spec)


def test_domain_and_descriptions_reach_the_prefix_and_the_label_filter(user_files):
    paths, _ = user_files
    args = GradMatchConfig(
        train_file=[str(paths["train"])], domain="film verdict", class_descriptions="harsh,warm", **COLUMNS
    )
    _, spec = load_task(args.to_task())
    assert spec.class_prefix(1) == "Here is a warm film verdict:"
    pairs = '"bad" for a harsh one, "great" for a warm one'
    assert spec.instruction() == f"Each film verdict below ends with one word for its class: {pairs}.\n\n"
    registered = GradMatchConfig(domain="film review").to_task()
    assert registered.class_prefix(0) == "Here is a negative film review:" and registered.instruction() == ""


def test_the_run_config_records_the_custom_tasks_name(user_files, tmp_path):
    paths, _ = user_files
    assert GradMatchConfig(train_file=[str(paths["train"])], **COLUMNS).task == "train"
    assert GradMatchConfig(dataset=str(paths["train"]), **COLUMNS).task == "train"
    named = GradMatchConfig(train_file=str(paths["train"]), task_name="film_verdicts", **COLUMNS)
    assert named.task == "film_verdicts" and named.train_file == [str(paths["train"])]

    # the name is a label: a folder made under another name (or before names were recorded) resumes
    from hf_gradmm import rundir

    folder = tmp_path / "run"
    before = {"config": {**named.fingerprint(), "task": "rotten_tomatoes"}, "task": {"name": "custom"}}
    rundir.open_run(folder, before, resume=False)
    (folder / "rounds" / "round_0000.json").write_text("{}")  # unreadable: warned about, redone
    with pytest.warns(UserWarning):
        rundir.open_run(folder, {"config": named.fingerprint(), "task": {"name": "film_verdicts"}}, resume=True)
    with pytest.raises(rundir.SynthesisError, match="config.seed"):
        changed = {"config": {**named.fingerprint(), "seed": 7}, "task": {"name": "custom"}}
        rundir.open_run(folder, changed, resume=True)


def test_yaml_and_flags_take_split_files(user_files, tmp_path):
    from hf_gradmm.cli.main import _parse

    paths, _ = user_files
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({"train_file": str(paths["train"]), "validation_file": [str(paths["validation"])], **COLUMNS})
    )
    (args,) = _parse("synthesize", ["--config", str(config), "--test-file", str(paths["test"])])[:1]
    assert args.train_file == [str(paths["train"])] and args.test_file == [str(paths["test"])]
    assert args.to_task().split_files == {"validation": (str(paths["validation"]),), "test": (str(paths["test"]),)}


@pytest.mark.slow
def test_no_test_example_reaches_the_targets_or_the_dev_choice(smollm2, user_files, tmp_path, monkeypatch):
    """A real SmolLM2 synthesis on the three files, then an evaluation: the targets and held-out
    texts come from train.csv only, the dev choice reads validation.csv only, the test read is
    test.csv; run_state.json names the task."""
    from hf_gradmm.evaluation import harness
    from hf_gradmm.finetune import FinetuneConfig
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    paths, texts = user_files
    model, tok = smollm2
    files = dict(
        train_file=[str(paths["train"])], validation_file=[str(paths["validation"])], test_file=[str(paths["test"])]
    )
    args = GradMatchConfig(
        init="lm",
        **files,
        **COLUMNS,
        task_name="film_verdicts",
        output_dir=str(tmp_path / "out"),
        per_class=2,
        texts_per_round=2,
        outer_steps=1,
        inner_steps=1,
        refine_steps=0,
        projection_beams=1,
        seq_len=6,
        target_examples=8,
        heldout_examples=2,
        disable_tqdm=True,
    )
    synth = GradMatchSynthesizer(model, args, processing_class=tok)
    synth.train()
    used = {t for part in synth.prepared.pool.values() for key in ("target", "heldout") for t in part[key]}
    assert used and used <= texts["train"]
    state = json.loads((tmp_path / "out" / "run_state.json").read_text())
    assert state["config"]["task"] == "film_verdicts"

    seen = {}
    real_finetune = harness.finetune

    def recording(model, tok, task, texts_, labels, dev, recipe, seed, **reporting):
        seen.setdefault("dev", set()).update(dev[0])
        return real_finetune(model, tok, task, texts_, labels, dev, recipe, seed, **reporting)

    monkeypatch.setattr(harness, "finetune", recording)
    evaluate = harness.EvaluateArguments(
        methods="random", budget=2, draws=1, seeds=1, models="smollm2-135m", output=str(tmp_path / "r.json")
    )
    recipe = FinetuneConfig(max_steps=2, eval_steps=1, dev_examples=10, finetune="lora")
    results = harness.run_evaluation(args.to_task(), evaluate, recipe, models={"smollm2-135m": smollm2})
    assert seen["dev"] and seen["dev"] <= texts["validation"]
    assert results["test_examples"] == len(texts["test"]) and results["task"] == "film_verdicts"
