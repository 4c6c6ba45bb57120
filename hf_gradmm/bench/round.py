"""``hf-gradmm bench round``: one whole round of GRADMM on real data, seconds per stage.

This benchmark runs the set-up (real pool, class targets) and one round per timed class with
the synthesis settings (B = 10, 4-beam projection) and by default the ADMM round, 0.1.0's default
(init 'lm', schedule 'admm': 4 x 10 steps and 40 refinement steps), recording the engine's stages
(engine/stages.py). It reports the round's wall time, each stage's seconds, the final matching
distance and mean NLL of the texts, and the texts per hour that pace gives; with several seeds
or classes, each run and their medians. ``--baseline`` runs every round a second time as
hf_gradmm 0.1.0 computed it (bench/baseline.py: the same search, every row recomputed), on the
same set-up, and reports the speed-up and how the two rounds' distances, NLLs and texts compare;
``--baseline-schedule`` runs those at another schedule (``--schedule fast --baseline-schedule
admm``: a faster schedule against 0.1.0's default round; ``--init select --schedule none
--baseline-schedule admm``: the synthesis default, the shortlisted selection, against it;
``--select-margin-keep 0`` for the plain selection). Each run says
whether its texts use only allowed tokens (a pair's pinned template tokens aside).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from hf_gradmm import rundir
from hf_gradmm.bench.arguments import BenchArguments
from hf_gradmm.bench.baseline import BASELINE
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.diagnostics import calibration
from hf_gradmm.distributed import device as compute_device
from hf_gradmm.engine.gradients import model_state_kept
from hf_gradmm.engine.round import _frozen, run_round
from hf_gradmm.engine.stages import recording, stage
from hf_gradmm.targets.setup import prepare
from hf_gradmm.tasks import load_task


def _config(task, args: BenchArguments, seed: int, folder: Path, baseline: bool = False) -> GradMatchConfig:
    """The round's settings; ``baseline``: those of the ``--baseline`` rounds (0.1.0 had only exact
    refinement gradients; ``--baseline-schedule`` may replace the schedule and its steps, and then
    starts from 0.1.0's default init, 'lm')."""
    own = not baseline or args.baseline_schedule == "same"
    return GradMatchConfig(
        task=task.name,
        per_class=args.batch,
        texts_per_round=args.batch,
        schedule=args.schedule if own else args.baseline_schedule,
        outer_steps=args.outer_steps if own else 0,
        inner_steps=args.inner_steps if own else 0,
        target_checkpoints=args.target_checkpoints,
        init=args.init if own else "lm",
        select_margin_keep=args.select_margin_keep,  # init 'select' only: other inits set it to 0
        refine_gradients="exact" if baseline else args.refine_gradients,
        seed=seed,
        output_dir=str(folder),
        use_cpu=args.use_cpu,
    )


def _round(prepared, config: GradMatchConfig, label: int, batch: int, folder: Path, parts=None) -> dict:
    """One timed round of class ``label`` (``parts``: the baseline's z-step and refinement)."""
    with recording() as seconds:
        start = time.perf_counter()
        record = run_round(prepared, config, 0, label, batch, parts=parts)
        round_s = time.perf_counter() - start
        with stage("io"):  # what a synthesis writes per round
            (folder / rundir.ROUNDS_DIR).mkdir(parents=True, exist_ok=True)
            rundir.save_round(folder, record)
        with stage("calibration"):  # once per run, for every class: here for the timed class only
            calibration(prepared, [record], config)
    stages = {k: v for k, v in seconds.items() if k not in ("io", "calibration")}
    ids, frozen = torch.tensor(record.token_ids), _frozen(prepared, label)  # frozen: a pair's template tokens
    text_ids = ids if frozen is None else ids[:, ~frozen.cpu()]
    return {
        "seed": config.seed,
        "label": prepared.label_names[label],
        "round_s": round_s,
        "io_s": seconds.get("io", 0.0),
        "calibration_s": seconds.get("calibration", 0.0),
        "stages": stages,
        "other_s": round_s - sum(stages.values()),  # what no stage covers (embedding lookups, dual steps)
        "initial_distance": record.initial_distance,
        "admm_distance": record.admm_distance,
        "final_distance": record.final_distance,
        "nll": statistics.mean(record.nll),
        "texts": record.texts,
        "allowed_tokens_only": bool(prepared.allowed.cpu()[text_ids].all()),
        "seq_len": prepared.seq_lens[label],
        "init": config.init,
        "steps": f"{config.outer_steps} x {config.inner_steps}, {config.refine_steps} refinement steps "
        f"({config.refine_gradients} gradients)",
    }


def _seed_runs(model, tokenizer, task, data, args: BenchArguments, seed: int, folder: Path) -> tuple[list, list]:
    """The rounds of one seed for every timed class: the engine's and, with ``--baseline``, 0.1.0's."""
    config = _config(task, args, seed, folder)
    old_config = _config(task, args, seed, folder, baseline=True)
    labels = range(task.num_labels) if args.label == -1 else [args.label]
    runs, baseline = [], []
    torch.manual_seed(seed)
    with model_state_kept(model), recording() as seconds:
        with stage("targets"):
            prepared = prepare(model, tokenizer, task, config, data["train"], folder / "trajectory")
    for label in labels:
        runs.append({**_round(prepared, config, label, args.batch, folder), "targets_s": seconds["targets"]})
        if args.baseline:
            baseline.append({**_round(prepared, old_config, label, args.batch, folder, BASELINE), "targets_s": 0.0})
    return runs, baseline


def _summary(runs: list[dict]) -> dict:
    names = list(dict.fromkeys(name for run in runs for name in run["stages"]))
    return {
        "round_s": statistics.median(r["round_s"] for r in runs),
        "stages": {n: statistics.median(r["stages"].get(n, 0.0) for r in runs) for n in names},
        "final_distance": statistics.median(r["final_distance"] for r in runs),
        "nll": statistics.median(r["nll"] for r in runs),
        "mean_final_distance": statistics.mean(r["final_distance"] for r in runs),
        "mean_nll": statistics.mean(r["nll"] for r in runs),
        "allowed_tokens_only": all(r["allowed_tokens_only"] for r in runs),
    }


def bench_round(model, tokenizer, task, args: BenchArguments) -> dict:
    """Time ``args.seeds`` rounds of class ``args.label`` (-1: every class); see the module docstring."""
    data, task = load_task(task)
    if not -1 <= args.label < task.num_labels:
        raise ValueError(
            f"--label {args.label} is not a class of {task.name!r} (0 to {task.num_labels - 1}, or -1 for every class)."
        )
    device = compute_device(args.use_cpu)
    model.to(device)
    runs, baseline = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.seeds):
            new, old = _seed_runs(model, tokenizer, task, data, args, args.seed + k, Path(tmp) / f"seed{k}")
            runs, baseline = runs + new, baseline + old
    summary = _summary(runs)
    report = {
        "model": getattr(model.config, "_name_or_path", ""),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "task": task.name,
        "label": "every class" if args.label == -1 else task.label_names[args.label],
        "batch": args.batch,
        "schedule": f"{args.schedule}: {runs[0]['steps']}",
        "target_checkpoints": args.target_checkpoints,
        **summary,
        "outside_the_round": {
            k: statistics.median(r[f"{k}_s"] for r in runs) for k in ("targets", "calibration", "io")
        },
        "texts_per_hour": args.batch * 3600 / summary["round_s"],
        "runs": runs,
    }
    if baseline:
        old = _summary(baseline)
        report["baseline"] = {**old, "runs": baseline}
        report["speedup"] = statistics.median(b["round_s"] / r["round_s"] for r, b in zip(runs, baseline))
        report["relative_distance"] = summary["mean_final_distance"] / old["mean_final_distance"] - 1
        report["relative_nll"] = summary["mean_nll"] / old["mean_nll"] - 1
        report["same_texts"] = sum(r["texts"] == b["texts"] for r, b in zip(runs, baseline))
    return report
