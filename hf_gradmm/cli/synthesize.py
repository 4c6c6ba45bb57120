"""``hf-gradmm synthesize`` and ``hf-gradmm bench``: run GRADMM, time its x-step."""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from hf_gradmm import rundir
from hf_gradmm.bench import bench_round, bench_step
from hf_gradmm.config import chooses_only
from hf_gradmm.distributed import finish
from hf_gradmm.models import check_model_name, load_model_and_tokenizer
from hf_gradmm.synthesizer import GradMatchSynthesizer
from hf_gradmm.targets.pool import check_pool
from hf_gradmm.tasks import load_task


class Interrupted(Exception):
    """Ctrl-C: the message says what was kept and how to go on; the CLI exits with 130."""


def interrupted(config) -> Interrupted:
    """The one line a Ctrl-C of ``synthesize`` prints: the rounds kept and the command that resumes."""
    kept = rundir.finished_round_count(config.output_dir)
    again = rundir.command_line()
    again += "" if config.resume else " --resume"
    return Interrupted(f"interrupted: {kept} finished round(s) kept in {config.output_dir}; continue with: {again}")


def synthesize(config, model_args) -> None:
    """Run GRADMM and print where the dataset went, a few texts and the calibration figures. The
    task, the output folder and its lock are checked before the model loads."""
    start = time.perf_counter()
    main = os.environ.get("RANK", "0") == "0"
    # The output folder, the model name, the data and the pool sizes: refused before the model loads.
    if main:
        rundir.check_output_dir(config.output_dir)
    check_model_name(model_args.model)
    if config.select_scorer:
        check_model_name(config.select_scorer)
    try:
        with rundir.folder_lock(config.output_dir, rundir.command_line()) if main else nullcontext():
            if main:
                rundir.check_resumable(Path(config.output_dir), config.resume)
            data, task = load_task(config.to_task())
            real = data["train" if config.real_split == "train" else "validation"]
            check_pool(real, task, config.target_examples, config.heldout_examples, config.real_split)
            model, tokenizer = load_model_and_tokenizer(
                model_args.model, dtype=torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
            )
            synthesizer = GradMatchSynthesizer(
                model, config, data["train"], data["validation"], processing_class=tokenizer, task=task
            )
            result = synthesizer.train()
    except KeyboardInterrupt:
        if not main:  # the main process reports for all
            raise Interrupted("") from None
        raise interrupted(config) from None
    finish()  # several processes: every one has its rounds; end them together
    seconds = time.perf_counter() - start
    if synthesizer.rank != 0:  # several processes: the main one reports
        return
    print(
        f"\n{len(result.texts)} synthetic texts in {result.output_dir} ({seconds:.0f} s); "
        f"load with datasets.load_from_disk({result.output_dir!r})"
    )
    for name in result.label_names:
        shown = [t for t in result.texts if result.label_names[t.label] == name][:3]
        for t in shown:
            print(f"  [{name}] (distance {t.match_distance:.3f}, nll {t.nll:.2f}) {t.text}")
    calibration = result.metrics.get("calibration", {})
    if calibration:
        print("\nmatching distance to the class target (batch of texts; lower is closer):")
        columns = {
            "heldout_same_class": "held-out real",
            "other_classes": "other class",
            "model_sampled": "model sampled",
        }
        if chooses_only(config.to_dict()):  # no steps: the chosen batch is both first and last
            columns["gradmm_final"] = "GRADMM chosen"
        else:
            columns |= {"gradmm_initial": "GRADMM init", "gradmm_final": "GRADMM final"}
        print(f"  {'class':<12} " + " ".join(f"{head:>14}" for head in columns.values()))
        for name, c in calibration.items():  # n/a: not computed (e.g. no held-out texts in DP mode)
            cells = ["n/a" if c[k] is None else f"{c[k]:.4f}" for k in columns]
            print(f"  {name:<12} " + " ".join(f"{cell:>14}" for cell in cells))


def bench(model_args, task_args, args) -> dict:
    """``bench step`` or ``bench round``: print the report (``--json``: as JSON)."""
    model, tokenizer = load_model_and_tokenizer(model_args.model)
    if args.what == "round":
        report = bench_round(model, tokenizer, task_args.to_task(), args)
        _print_round(report, args.json)
        return report
    report = bench_step(model, tokenizer, task_args.to_task(), args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"x-step on {model_args.model}, B={args.batch}, T={args.seq_len}, {report['threads']} threads:")
        print(f"  the authors' (autograd create_graph + double backward, eager): {report['reference_s']:.3f} s")
        print(f"  ours (closed form, one backward, SDPA):                        {report['fast_s']:.3f} s")
        print(f"  ratio {report['ratio']:.2f}x; max |dX_ours - dX_ref| / max |dX_ref| = {report['max_rel_diff']:.2e}")
        print(
            f"  ours: {report['step_gflop']:.1f} GFLOP per step, {report['achieved_gflops']:.0f} GFLOP/s "
            f"(fp32 matmul peak here: {report['matmul_peak_gflops']:.0f} GFLOP/s)"
        )
        if "fast_bf16_s" in report:
            print(
                f"  ours in bf16: {report['fast_bf16_s']:.3f} s (ratio {report['ratio_bf16']:.2f}x, max rel diff "
                f"{report['max_rel_diff_bf16']:.2e}; bf16 matmul peak {report['matmul_peak_gflops_bf16']:.0f})"
            )
    return report


def _print_round(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"one round on {report['model']} ({report['task']}, class {report['label']}, B={report['batch']}, "
        f"{report['schedule']}, {report['target_checkpoints']}, {report['device']}, {report['threads']} threads; "
        f"median of {len(report['runs'])}):"
    )
    total = report["round_s"]
    for name, seconds in sorted(report["stages"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<18} {seconds:8.1f} s  {100 * seconds / total:5.1f}%")
    print(
        f"  round {total:.1f} s; final distance {report['final_distance']:.4f}, NLL {report['nll']:.3f}; "
        f"{report['texts_per_hour']:.0f} texts per hour"
    )
    outside = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report["outside_the_round"].items())
    print(f"  outside the round: {outside}")
    if "baseline" in report:
        old = report["baseline"]
        print(
            f"  0.1.0 (--baseline): round {old['round_s']:.1f} s; speed-up {report['speedup']:.2f}x (median of "
            f"{len(old['runs'])} pairs); mean final distance {report['mean_final_distance']:.5f} vs "
            f"{old['mean_final_distance']:.5f} ({100 * report['relative_distance']:+.2f}%), mean NLL "
            f"{report['mean_nll']:.3f} vs {old['mean_nll']:.3f} ({100 * report['relative_nll']:+.2f}%); "
            f"same texts in {report['same_texts']} of {len(old['runs'])}"
        )
