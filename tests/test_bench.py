"""The x-step benchmark: both formulations differentiate the same f(X) (timings are reported, not asserted)."""

from __future__ import annotations

import pytest

from hf_gradmm.bench import BenchArguments, bench_step
from hf_gradmm.tasks import get_task


def test_bench_step_reports_matching_gradients(tiny_llama, smollm2_tokenizer):
    report = bench_step(
        tiny_llama, smollm2_tokenizer, get_task("rotten_tomatoes"), BenchArguments(batch=3, seq_len=4, repeats=1)
    )
    for key in ("reference_s", "fast_s", "ratio", "max_rel_diff", "achieved_gflops", "matmul_peak_gflops"):
        assert report[key] > 0 or key == "max_rel_diff"
    assert report["max_rel_diff"] < 1e-3
    assert abs(report["distance_reference"] - report["distance_fast"]) < 1e-4
    assert tiny_llama.config._attn_implementation == "sdpa"
    assert all(p.requires_grad for p in tiny_llama.parameters())  # the model is left as it was


def test_bench_round_reports_stages_distance_and_pace(tiny_llama, smollm2_tokenizer):
    """One round per seed on real Rotten Tomatoes targets: every stage timed, the stages add up
    to the round, the figures of each seed and their medians; the model is left as it was."""
    from hf_gradmm.bench import bench_round

    args = BenchArguments(what="round", batch=2, outer_steps=2, inner_steps=2, seeds=2)
    report = bench_round(tiny_llama, smollm2_tokenizer, get_task("rotten_tomatoes"), args)
    assert {"round_s", "stages", "final_distance", "nll", "texts_per_hour", "device"} <= set(report)
    assert {"init", "projection", "beam_choice", "x_step", "refine_candidates"} <= set(report["stages"])
    assert [run["seed"] for run in report["runs"]] == [42, 43]
    for run in report["runs"]:
        assert 0 <= run["other_s"] < 0.2 * run["round_s"]  # the stages cover the round
        assert run["final_distance"] <= run["admm_distance"] + 1e-9 and len(run["texts"]) == 2
    assert report["texts_per_hour"] == 2 * 3600 / report["round_s"]
    assert set(report["outside_the_round"]) == {"targets", "calibration", "io"}
    assert all(v > 0 for v in report["outside_the_round"].values())
    assert all(p.requires_grad for p in tiny_llama.parameters())


def test_bench_round_refuses_a_class_the_task_lacks(tiny_llama, smollm2_tokenizer):
    from hf_gradmm.bench import bench_round

    with pytest.raises(ValueError, match="--label 5 is not a class"):
        bench_round(tiny_llama, smollm2_tokenizer, get_task("rotten_tomatoes"), BenchArguments(what="round", label=5))


def test_bench_round_baseline_runs_every_class_both_ways(tiny_llama, smollm2_tokenizer):
    """``--baseline --label -1``: every class's round also as 0.1.0 ran it, the same texts and
    distances (the same search), and a speed-up that is the median of the per-round ratios."""
    import statistics

    from hf_gradmm.bench import bench_round

    args = BenchArguments(what="round", batch=2, outer_steps=1, inner_steps=2, label=-1, baseline=True)
    report = bench_round(tiny_llama, smollm2_tokenizer, get_task("rotten_tomatoes"), args)
    runs, old = report["runs"], report["baseline"]["runs"]
    assert [r["label"] for r in runs] == [r["label"] for r in old] == ["negative", "positive"]
    assert report["same_texts"] == 2 and report["relative_distance"] == pytest.approx(0.0, abs=1e-5)
    assert [r["final_distance"] for r in runs] == pytest.approx([r["final_distance"] for r in old], rel=1e-5)
    assert report["speedup"] == statistics.median(b["round_s"] / r["round_s"] for r, b in zip(runs, old))
    assert report["label"] == "every class"


def test_bench_round_times_a_schedule_against_the_baseline_at_another(tiny_llama, smollm2_tokenizer):
    """``--schedule fast --baseline --baseline-schedule quick``: the engine's rounds at 'fast' (its
    steps and changed-row gradients), the baseline's at 'quick' with 0.1.0's exact gradients; each
    run says which steps it ran."""
    from hf_gradmm.bench import bench_round

    args = BenchArguments(what="round", batch=2, schedule="fast", baseline=True, baseline_schedule="quick", label=0)
    report = bench_round(tiny_llama, smollm2_tokenizer, get_task("rotten_tomatoes"), args)
    assert report["runs"][0]["steps"] == "3 x 5, 40 refinement steps (changed gradients)"
    assert report["baseline"]["runs"][0]["steps"] == "2 x 5, 10 refinement steps (exact gradients)"
    assert report["schedule"].startswith("fast: 3 x 5")
    assert report["speedup"] > 0 and "relative_distance" in report


def test_bench_round_times_a_selection_against_the_default_round(tiny_llama, smollm2_tokenizer):
    """``--init select --schedule none --baseline --baseline-schedule quick``: the engine's round is
    a pure selection (no ADMM step, no refinement: its output is its init), the baseline's rounds
    start from the default 'lm' init at the named schedule; both report which init they ran."""
    from hf_gradmm.bench import bench_round

    args = BenchArguments(
        what="round", batch=2, init="select", schedule="none", baseline=True, baseline_schedule="quick", label=0
    )
    report = bench_round(tiny_llama, smollm2_tokenizer, get_task("rotten_tomatoes"), args)
    run, old = report["runs"][0], report["baseline"]["runs"][0]
    assert (run["init"], old["init"]) == ("select", "lm")
    assert run["steps"].startswith("0 x 0, 0 refinement steps")
    assert old["steps"].startswith("2 x 5, 10 refinement steps")
    assert "x_step" not in run["stages"] and "x_step" in old["stages"]
    assert run["final_distance"] == pytest.approx(run["initial_distance"])  # the selection is the output
    assert report["same_texts"] == 0 and report["speedup"] > 0
    assert run["allowed_tokens_only"] and old["allowed_tokens_only"] and report["allowed_tokens_only"]
