"""``hf-gradmm study``: each evaluated training set's distances to a synthesis's targets, and their
rank correlation with the set's test accuracy."""

from __future__ import annotations

import json

import pytest

from hf_gradmm.cli import main
from hf_gradmm.evaluation import EvaluateArguments, FinetuneConfig, run_evaluation
from hf_gradmm.evaluation.study import StudyArguments, run_study, spearman_interval

TINY_RECIPE = dict(max_steps=2, batch_size=4, eval_steps=1, patience=5, dev_examples=8, test_examples=10)


@pytest.fixture()
def evaluated(tiny_llama, smollm2_tokenizer, rotten_tomatoes, crafted_synthesis, tmp_path):
    """Random real, LM-written and the synthesis's own real pool, evaluated on the tiny model."""
    path, _ = crafted_synthesis
    _, task = rotten_tomatoes
    args = EvaluateArguments(
        synthetic=str(path), models="tiny", generator="tiny", methods="random,llm,real_pool", budget=2, draws=2,
        seeds=2, llm_length=6, output=str(tmp_path / "eval" / "results.json"),
    )  # fmt: skip
    results = run_evaluation(
        task, args, FinetuneConfig(**TINY_RECIPE), models={"tiny": (tiny_llama, smollm2_tokenizer)}
    )
    return path, tmp_path / "eval" / "results.json", results


def test_study_measures_every_set_against_the_synthesis_targets(evaluated, tiny_llama, smollm2_tokenizer, tmp_path):
    synthesis, results_path, results = evaluated
    args = StudyArguments(
        results=str(results_path), synthesis=str(synthesis), trajectory=1, resamples=200,
        output=str(tmp_path / "study.json"),
    )  # fmt: skip
    study = run_study(args, loaded=(tiny_llama, smollm2_tokenizer))
    rows = {row["name"]: row for row in study["sets"]}
    assert len(rows) == 2 + 2 + 1  # random and llm: two sets each; real_pool: one
    for row in rows.values():  # each set's accuracy is the mean over its fine-tuning seeds
        runs = [r for r in results["runs"] if r["training_file"] and row["file"].endswith(r["training_file"])]
        assert row["seeds"] == 2 and row["accuracy"] == pytest.approx(sum(r["test_accuracy"] for r in runs) / 2)
    predictors = {"theta0", "trajectory_1", "trajectory_mean", "contrastive", "last_block", "nll", "label_margin"}
    assert set(study["correlations"]) == predictors
    # The real pool *is* what the targets were made from: its distance is zero under every definition,
    # which checks that the study rebuilt the synthesis's own targets (and pads real texts correctly).
    pool = rows["results:real_pool/set0"]
    for name in ("theta0", "trajectory_1", "last_block"):
        assert pool[name] == pytest.approx(0.0, abs=1e-4)
        assert all(row[name] > 1e-3 for key, row in rows.items() if key != "results:real_pool/set0")
    assert pool["contrastive"] < 0
    assert rows["results:random/set0"]["trajectory_1"] != rows["results:random/set0"]["theta0"]
    for c in study["correlations"].values():  # the tiny model may train every set alike: rho undefined
        assert c["points"] == 5 and (c["rho"] is None or -1 <= c["low"] <= c["high"] <= 1)
    table = (tmp_path / "study.md").read_text()
    assert "| theta0 |" in table and "results:real_pool/set0" in table
    assert json.loads((tmp_path / "study.json").read_text())["model"] == "tiny"


def test_spearman_interval_of_a_monotone_relation():
    c = spearman_interval([1, 2, 3, 4, 5, 6, 7, 8], [0.9, 0.8, 0.75, 0.7, 0.6, 0.5, 0.45, 0.3], resamples=300)
    assert c["rho"] == pytest.approx(-1.0) and c["high"] < -0.5
    assert spearman_interval([1, 2, 3], [0.5, 0.5, 0.5], resamples=10)["rho"] is None


def test_study_refuses_bad_input_before_any_model_work(evaluated, tmp_path, capsys):
    synthesis, results_path, results = evaluated
    assert main(["study", "--results", str(tmp_path / "nope.json"), "--synthesis", str(synthesis)]) == 1
    assert "not found: run 'hf-gradmm evaluate" in capsys.readouterr().err
    assert main(["study", "--results", str(results_path)]) == 1
    assert "--synthesis DIR" in capsys.readouterr().err
    other = dict(results, recipe={**results["recipe"], "max_steps": 99})
    (tmp_path / "eval" / "other.json").write_text(json.dumps(other))
    both = f"{results_path},{tmp_path / 'eval' / 'other.json'}"
    assert main(["study", "--results", both, "--synthesis", str(synthesis), "--output", str(tmp_path / "s.json")]) == 1
    assert "another recipe" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_candidate_sets_script_draws_balanced_named_sets(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    """examples/candidate_sets.py on a synthesis of 2 rounds per class and saved llm/random pools."""
    import subprocess
    import sys
    from pathlib import Path

    from hf_gradmm.config import GradMatchConfig
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    data, _ = rotten_tomatoes
    args = GradMatchConfig(
        init="lm",
        output_dir=str(tmp_path / "synth"), per_class=4, texts_per_round=2, seq_len=4, outer_steps=1, inner_steps=1,
        init_candidates=1, target_examples=4, heldout_examples=2, topk=10, refine_steps=0, disable_tqdm=True,
        calibrate=False,
    )  # fmt: skip
    GradMatchSynthesizer(tiny_llama, args, train_dataset=data["train"], processing_class=smollm2_tokenizer).train()
    for pool in ("llm", "random"):
        (tmp_path / "sets" / pool).mkdir(parents=True)
        lines = [json.dumps({"text": f"{pool} text {i}", "label": i % 2}) for i in range(8)]
        (tmp_path / "sets" / pool / "set0.jsonl").write_text("\n".join(lines) + "\n")
    script = Path(__file__).parents[1] / "examples" / "candidate_sets.py"
    subprocess.run(
        [sys.executable, str(script), "--synthesis", str(tmp_path / "synth"), "--sets-from", str(tmp_path / "sets"),
         "--per-class", "2", "--subsets", "1", "--mixtures", "1", "--out", str(tmp_path / "cand")],
        check=True,
    )  # fmt: skip
    spec = (tmp_path / "cand" / "synthetic.txt").read_text()
    names = [part.split("=", 1)[0] for part in spec.split(",")]
    assert names == ["round0", "round1", "lowest_distance", "highest_distance", "subset0", "gradmm_llm0",
                     "gradmm_real0", "llm_real0"]  # fmt: skip
    for part in spec.split(","):
        rows = [json.loads(line) for line in Path(part.split("=", 1)[1]).read_text().splitlines()]
        assert sorted(r["label"] for r in rows) == [0, 0, 1, 1]
    mixed = [json.loads(line)["text"] for line in (tmp_path / "cand" / "llm_real0.jsonl").read_text().splitlines()]
    assert sum(t.startswith("llm") for t in mixed) == sum(t.startswith("random") for t in mixed) == 2
