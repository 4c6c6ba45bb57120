"""The hf-gradmm command line: info, preview, YAML configs with flag overrides, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hf_gradmm.cli import main


def test_info_json_lists_offline_tasks_and_models():
    out = subprocess.run(
        [sys.executable, "-m", "hf_gradmm", "info", "--json"], capture_output=True, text=True, check=True
    ).stdout
    report = json.loads(out)
    tasks = {t["name"]: t for t in report["tasks"]}
    models = {m["name"]: m for m in report["models"]}
    assert tasks["rotten_tomatoes"]["available_offline"] and tasks["tweet_sentiment"]["available_offline"]
    assert not tasks["sst2"]["available_offline"] and tasks["sst2"]["source"] == "hub"
    assert models["smollm2-135m"]["available"] is True
    assert models["gemma3-270m"]["licence"] == "Gemma Terms of Use"


def test_info_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "rotten_tomatoes" in out and "smollm2-135m" in out


def test_evaluate_refuses_bad_input_clearly(capsys, tmp_path):
    assert main(["evaluate", "--methods", "zero_shot,distillation", "--output", str(tmp_path / "r.json")]) == 1
    assert "Unknown method" in capsys.readouterr().err
    assert main(["evaluate", "--methods", "gradmm", "--output", str(tmp_path / "r.json")]) == 1
    assert "needs --synthetic" in capsys.readouterr().err


def test_unknown_command_and_task(capsys):
    assert main(["distil"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main(["preview", "--task", "nope"]) == 1
    err = capsys.readouterr().err
    assert "Unknown task 'nope'" in err and "rotten_tomatoes" in err


@pytest.fixture()
def tiny_model_dir(tmp_path, tiny_llama, smollm2_tokenizer):
    folder = tmp_path / "tiny"
    tiny_llama.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def _shown_examples(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[")]


def test_yaml_config_and_flags_override_it(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "preview.yaml"
    config.write_text(f"task: rotten_tomatoes\nmodel: {tiny_model_dir}\nnum_examples: 3\nsplit: validation\n")
    assert main(["preview", "--config", str(config)]) == 0
    assert len(_shown_examples(capsys.readouterr().out)) == 6  # 3 per class, from YAML
    assert main(["preview", "--config", str(config), "--num-examples", "1"]) == 0
    assert len(_shown_examples(capsys.readouterr().out)) == 2  # the flag wins


def test_bad_label_word_from_cli_is_refused(tiny_model_dir, capsys):
    assert main(["preview", "--model", str(tiny_model_dir), "--label-words", "unwatchable,great"]) == 1
    assert "'unwatchable'" in capsys.readouterr().err


@pytest.mark.slow
def test_preview_end_to_end_on_the_real_model(capsys):
    """The README's first command until synthesis exists: real SmolLM2, real Rotten Tomatoes."""
    assert main(["preview", "--task", "rotten_tomatoes", "--model", "smollm2-135m", "--num-examples", "5"]) == 0
    out = capsys.readouterr().out
    assert "' bad' (token 3309)" in out and "' great' (token 1109)" in out
    shown = _shown_examples(out)
    assert len(shown) == 10
    assert all("model says 'bad'" in line or "model says 'great'" in line for line in shown)


def test_synthesize_cli_with_yaml_and_flags(tmp_path, tiny_model_dir, capsys):
    from datasets import load_from_disk

    config = tmp_path / "synth.yaml"
    out = tmp_path / "out"
    config.write_text(
        f"model: {tiny_model_dir}\ntask: rotten_tomatoes\ninit: lm\nper_class: 4\ntexts_per_round: 2\nseq_len: 4\n"
        f"outer_steps: 3\ninner_steps: 1\ninit_candidates: 1\ntarget_examples: 4\nheldout_examples: 2\n"
        f"topk: 10\noutput_dir: {out}\ndisable_tqdm: true\n"
    )
    assert (
        main(["synthesize", "--config", str(config), "--outer-steps", "1", "--per-class", "2", "--output", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert f"4 synthetic texts in {out}" in printed and "GRADMM init" in printed and "GRADMM final" in printed
    ds = load_from_disk(str(out))
    assert len(ds) == 4 and ds.features["label"].names == ["negative", "positive"]
    assert "outer_steps: 1" in (out / "config.yaml").read_text()  # the flag beat the YAML
    # A rerun without --resume refuses and keeps what is there.
    assert main(["synthesize", "--config", str(config)]) == 1
    assert "--resume" in capsys.readouterr().err
    assert len(load_from_disk(str(out))) == 4


def test_fixed_choices_are_listed_by_the_parser_and_refused_in_python(capsys, tmp_path):
    """Literal[...] fields: the CLI refuses a value outside them with the list, before any work;
    a config built in Python refuses it too, naming the field and the choices."""
    from hf_gradmm.config import GradMatchConfig

    with pytest.raises(SystemExit) as stop:
        main(["synthesize", "--init", "bogus", "--output-dir", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "invalid choice" in err and "'lm'" in err
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match=r"distance='l3' is not one of \('cos', 'l2', 'l1\+l2'\)"):
        GradMatchConfig(distance="l3")
    with pytest.raises(SystemExit):
        main(["synthesize", "--help"])
    assert "{random,real,lm,select}" in capsys.readouterr().out


def test_runtime_fields_are_the_last_section_of_the_config():
    """The fields a resume may change sit together at the end of GradMatchConfig, and only they
    are left out of the resume fingerprint."""
    from dataclasses import fields

    from hf_gradmm.config import LATER_DEFAULTS, RUNTIME_FIELDS, GradMatchConfig

    names = [f.name for f in fields(GradMatchConfig)]
    assert tuple(names[names.index("output_dir") :]) == RUNTIME_FIELDS
    # left out at the value that means "as before" only, so folders made before them resume
    later = {k for k, v in LATER_DEFAULTS.items() if getattr(GradMatchConfig(), k) == v}
    assert "select_margin_keep" not in later  # the default shortlists; 0 (before it) is left out
    # task_name: a label (the custom task's name is recorded as `task`, which a resume compares)
    assert set(GradMatchConfig().fingerprint()) == set(names) - set(RUNTIME_FIELDS) - {"schedule", "task_name"} - later
    assert GradMatchConfig(target_control="swapped").fingerprint()["target_control"] == "swapped"


def test_schedule_presets_set_the_steps_and_flags_override_them(capsys):
    """--schedule sets outer x inner steps and refinement steps; a step flag overrides its part; the
    resolved steps (not the preset's name) are what a resume compares."""
    from hf_gradmm.config import GradMatchConfig

    steps = lambda c: (c.outer_steps, c.inner_steps, c.refine_steps)  # noqa: E731
    assert steps(GradMatchConfig()) == (0, 0, 0)  # the default: the selection is the output
    assert steps(GradMatchConfig(schedule="admm")) == steps(GradMatchConfig(schedule="default")) == (4, 10, 40)
    assert steps(GradMatchConfig(schedule="paper")) == (30, 50, 0)
    assert steps(GradMatchConfig(schedule="quick", inner_steps=7)) == (2, 7, 10)
    assert steps(GradMatchConfig(schedule="admm", refine_steps=0)) == (4, 10, 0)
    # 'fast' also sets the refinement's gradients; an explicit --refine-gradients wins
    assert (*steps(GradMatchConfig(schedule="fast")), GradMatchConfig(schedule="fast").refine_gradients) == (
        3, 5, 40, "changed"
    )  # fmt: skip
    assert GradMatchConfig(schedule="fast", refine_gradients="exact").refine_gradients == "exact"
    assert GradMatchConfig().refine_gradients == "exact"  # what folders made before the option resume with
    again = GradMatchConfig(**GradMatchConfig(schedule="quick", outer_steps=3).to_dict())  # as config.yaml reads back
    assert steps(again) == (3, 5, 10)
    assert GradMatchConfig(schedule="paper", outer_steps=4, inner_steps=10, refine_steps=40).fingerprint() == (
        GradMatchConfig(schedule="default").fingerprint()  # 'admm' under its 0.1.0 name, as old folders have it
    )
    with pytest.raises(SystemExit):
        main(["synthesize", "--help"])
    assert "{none,admm,fast,quick,paper,default}" in capsys.readouterr().out


def test_a_run_without_steps_reports_one_distance(tmp_path, tiny_model_dir, capsys):
    """The default chooses among the model's own texts and takes no step: its first batch is its last,
    so the calibration shows one GRADMM column, named for what it is."""
    out = tmp_path / "out"
    args = ["--model", str(tiny_model_dir), "--per-class", "2", "--texts-per-round", "2", "--seq-len", "4"]
    args += ["--select-pool", "8", "--select-margin-keep", "4", "--target-examples", "4", "--heldout-examples", "2"]
    assert main(["synthesize", *args, "--output-dir", str(out), "--disable-tqdm"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "held-out real" in line)
    assert header.split()[-2:] == ["GRADMM", "chosen"] and "GRADMM init" not in printed


def test_the_default_is_the_margin_shortlisted_selection():
    """The default is the configuration that trained best in docs/results.md: the selection (no ADMM)
    among the 100 plainest of 300 draws; another init has no shortlist, so an ADMM run made before
    the option resumes with the fingerprint it was saved with."""
    from hf_gradmm.config import GradMatchConfig

    default = GradMatchConfig()
    assert (default.init, default.schedule, default.select_pool, default.select_margin_keep) == (
        "select", "none", 300, 100
    )  # fmt: skip
    assert default.target_checkpoints == "trajectory:4/4"  # 'auto' for the selection
    admm = GradMatchConfig(init="lm", schedule="admm")
    assert admm.select_margin_keep == 0 and "select_margin_keep" not in admm.fingerprint()
    assert GradMatchConfig(init="lm", select_margin_keep=50).select_margin_keep == 0
    assert GradMatchConfig(select_margin_keep=0).fingerprint() != default.fingerprint()


def test_auto_checkpoints_are_the_trajectory_end_for_the_selection_only():
    """'auto' targets the end of the short fine-tuning for the selection, where it trained best, and
    theta0 wherever that fine-tuning cannot be used or was not measured; an explicit value stays, and
    the saved config holds the resolved one (so a resume compares what was run)."""
    from hf_gradmm.config import GradMatchConfig

    assert GradMatchConfig(select_margin_keep=0).target_checkpoints == "trajectory:4/4"
    for theta0 in (
        dict(init="lm", schedule="admm"),
        dict(init="random"),
        dict(dp_epsilon=1.0, seq_len=5, heldout_examples=0),  # the fine-tuning would read the examples noise-free
        dict(coverage_weight=0.03),  # its groups are taken at theta0
        dict(num_processes=2),  # the fine-tuning runs in one process
    ):
        assert GradMatchConfig(**theta0).target_checkpoints == "theta0", theta0
    assert GradMatchConfig(target_checkpoints="theta0").target_checkpoints == "theta0"
    assert GradMatchConfig(init="lm", target_checkpoints="trajectory:2").target_checkpoints == "trajectory:2"
    assert GradMatchConfig().to_dict()["target_checkpoints"] == "trajectory:4/4"
    with pytest.raises(ValueError, match="trajectory_steps divisible by 4"):
        GradMatchConfig(trajectory_steps=10)  # auto's trajectory:4/4 needs it, and the message says how
