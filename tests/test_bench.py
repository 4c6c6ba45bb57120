"""The x-step benchmark: both formulations differentiate the same f(X) (timings are reported, not asserted)."""

from __future__ import annotations

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
