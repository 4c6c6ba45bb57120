"""The options of ``hf-gradmm bench`` (one dataclass: the CLI parses it for both benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hf_gradmm.arguments import SEED_MAX, check_choices, check_number
from hf_gradmm.config import Schedule


@dataclass
class BenchArguments:
    """What ``hf-gradmm bench`` times: ``step`` (one x-step, two formulations) or ``round`` (one round)."""

    what: Literal["step", "round"] = field(
        default="step",
        metadata={"help": "What to time: 'step' (one inner x-step, the authors' formulation against ours) or "
                  "'round' (one whole ADMM round on real data, seconds per stage)."},
    )  # fmt: skip
    batch: int = field(default=10, metadata={"help": "B: synthetic sequences per step (step) or per round (round)."})
    seq_len: int = field(
        default=24, metadata={"help": "step: T, free tokens per sequence (a round takes the class's mean length)."}
    )
    repeats: int = field(
        default=5, metadata={"help": "step: timed repetitions (after one warm-up); the median counts."}
    )
    bf16: bool = field(default=False, metadata={"help": "step: also time our step and the matmul in bfloat16."})
    schedule: Schedule = field(
        default="admm",
        metadata={"help": "round: the schedule preset (see GradMatchConfig.schedule; 'admm': 0.1.0's default)."},
    )
    outer_steps: int = field(default=0, metadata={"help": "round: ADMM outer iterations; 0 = the schedule's."})
    inner_steps: int = field(
        default=0, metadata={"help": "round: x-step Adam steps per outer iteration; 0 = the schedule's."}
    )
    init: Literal["lm", "select", "random", "real"] = field(
        default="lm",
        metadata={"help": "round: the round's init (see GradMatchConfig.init); '--init select --schedule none' "
                  "times the synthesis default (the shortlisted selection of LM-written texts). Baseline rounds "
                  "at a named --baseline-schedule start from init 'lm', 0.1.0's default."},
    )  # fmt: skip
    select_margin_keep: int = field(
        default=100,
        metadata={"help": "round, init 'select': the label-margin shortlist (see GradMatchConfig.select_margin_keep; "
                  "100, the synthesis default); 0 times the plain selection, as the issue 16 figures did."},
    )  # fmt: skip
    refine_gradients: Literal["auto", "exact", "changed"] = field(
        default="auto", metadata={"help": "round: the refinement's gradients (see GradMatchConfig.refine_gradients)."}
    )
    label: int = field(
        default=1, metadata={"help": "round: the class whose round is timed (label id); -1 = every class."}
    )
    baseline: bool = field(
        default=False,
        metadata={"help": "round: also run each round as hf_gradmm 0.1.0 did (the same search, every row "
                  "recomputed at every step), and report both, the speed-up and the quality difference."},
    )  # fmt: skip
    baseline_schedule: Literal["same", "admm", "fast", "quick", "paper", "default"] = field(
        default="same",
        metadata={"help": "round: the steps of the --baseline rounds: 'same' (this run's) or a schedule preset, "
                  "e.g. 'admm' (0.1.0's 'default') to time --schedule fast against 0.1.0's default round."},
    )  # fmt: skip
    seed: int = field(default=42, metadata={"help": "round: seed of the first run."})
    seeds: int = field(default=1, metadata={"help": "round: runs with seeds seed, seed + 1, ...; the median counts."})
    target_checkpoints: str = field(
        default="theta0", metadata={"help": "round: target checkpoints, as in synthesize (e.g. 'trajectory:2')."}
    )
    json: bool = field(default=False, metadata={"help": "Print JSON."})
    use_cpu: bool = field(default=False, metadata={"help": "Time on the CPU even when a CUDA GPU is available."})

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("batch", "seq_len", "repeats", "seeds"):
            check_number(self, name, 1)
        for name in ("outer_steps", "inner_steps"):
            check_number(self, name, 0, note="0 = the schedule's")
        check_number(self, "label", -1, note="-1 = every class")
        check_number(self, "select_margin_keep", 0, note="0 = the plain selection")
        check_number(self, "seed", 0, SEED_MAX)
