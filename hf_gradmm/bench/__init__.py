"""Benchmarks: ``hf-gradmm bench step`` (step.py: one x-step, two formulations) and ``hf-gradmm bench
round`` (round.py: one whole round, seconds per stage)."""

from hf_gradmm.bench.arguments import BenchArguments
from hf_gradmm.bench.round import bench_round
from hf_gradmm.bench.step import bench_step, matmul_peak_gflops

__all__ = ["BenchArguments", "bench_round", "bench_step", "matmul_peak_gflops"]
