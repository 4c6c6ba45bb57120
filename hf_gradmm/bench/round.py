"""``hf-gradmm bench round``: one whole round of GRADMM on real data, seconds per stage.

The x-step is a fifth of a round; the rest is the projection, the beam choice, the exact
distances and the token-swap refinement. This benchmark runs the set-up (real pool, class
targets) and one round of one class with the synthesis defaults (B = 10, 4-beam projection,
the default schedule: 4 x 10 steps and 40 refinement steps, what the results were measured
with), recording the engine's stages (engine/stages.py). It reports the round's
wall time, each stage's seconds, the final matching distance and mean NLL of the texts, and the
texts per hour that pace gives; with several seeds, each run and their medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from hf_gradmm import rundir
from hf_gradmm.bench.arguments import BenchArguments
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.diagnostics import calibration
from hf_gradmm.distributed import device as compute_device
from hf_gradmm.engine.gradients import model_state_kept
from hf_gradmm.engine.round import run_round
from hf_gradmm.engine.stages import recording, stage
from hf_gradmm.targets.setup import prepare
from hf_gradmm.tasks import load_task


def _one(model, tokenizer, task, data, args: BenchArguments, seed: int, folder: Path) -> dict:
    config = GradMatchConfig(
        task=task.name,
        per_class=args.batch,
        texts_per_round=args.batch,
        schedule=args.schedule,
        outer_steps=args.outer_steps,
        inner_steps=args.inner_steps,
        target_checkpoints=args.target_checkpoints,
        seed=seed,
        output_dir=str(folder),
        use_cpu=args.use_cpu,
    )
    torch.manual_seed(seed)
    with model_state_kept(model), recording() as seconds:
        with stage("targets"):
            prepared = prepare(model, tokenizer, task, config, data["train"], folder / "trajectory")
        start = time.perf_counter()
        record = run_round(prepared, config, 0, args.label, args.batch)
        round_s = time.perf_counter() - start
        with stage("io"):  # what a synthesis writes per round
            (folder / rundir.ROUNDS_DIR).mkdir(parents=True, exist_ok=True)
            rundir.save_round(folder, record)
        with stage("calibration"):  # once per run, for every class: here for the timed class only
            calibration(prepared, [record], config)
    after = ("targets", "io", "calibration")
    stages = {k: v for k, v in seconds.items() if k not in after}
    return {
        "seed": seed,
        "round_s": round_s,
        "targets_s": seconds.get("targets", 0.0),
        "io_s": seconds.get("io", 0.0),
        "calibration_s": seconds.get("calibration", 0.0),
        "stages": stages,
        "other_s": round_s - sum(stages.values()),  # what no stage covers (embedding lookups, dual steps)
        "initial_distance": record.initial_distance,
        "admm_distance": record.admm_distance,
        "final_distance": record.final_distance,
        "nll": statistics.mean(record.nll),
        "texts": record.texts,
        "seq_len": prepared.seq_lens[args.label],
        "steps": f"{config.outer_steps} x {config.inner_steps}, {config.refine_steps} refinement steps",
    }


def bench_round(model, tokenizer, task, args: BenchArguments) -> dict:
    """Time ``args.seeds`` rounds of class ``args.label``; see the module docstring."""
    data, task = load_task(task)
    if not 0 <= args.label < task.num_labels:
        raise ValueError(f"--label {args.label} is not a class of {task.name!r} (0 to {task.num_labels - 1}).")
    device = compute_device(args.use_cpu)
    model.to(device)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.seeds):
            runs.append(_one(model, tokenizer, task, data, args, args.seed + k, Path(tmp) / f"seed{k}"))
    names = list(dict.fromkeys(name for run in runs for name in run["stages"]))
    round_s = statistics.median(r["round_s"] for r in runs)
    return {
        "model": getattr(model.config, "_name_or_path", ""),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "task": task.name,
        "label": task.label_names[args.label],
        "batch": args.batch,
        "schedule": f"{args.schedule}: {runs[0]['steps']}",
        "target_checkpoints": args.target_checkpoints,
        "round_s": round_s,
        "stages": {n: statistics.median(r["stages"].get(n, 0.0) for r in runs) for n in names},
        "outside_the_round": {
            k: statistics.median(r[f"{k}_s"] for r in runs) for k in ("targets", "calibration", "io")
        },
        "final_distance": statistics.median(r["final_distance"] for r in runs),
        "nll": statistics.median(r["nll"] for r in runs),
        "texts_per_hour": args.batch * 3600 / round_s,
        "runs": runs,
    }
