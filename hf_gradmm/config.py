"""``GradMatchConfig``: every option of a GRADMM synthesis, documented, in the TrainingArguments style.

Parsed by ``trl.TrlParser`` for the CLI: each field is a flag (``--outer-steps``) and a YAML
key (``outer_steps:``); flags override the YAML file. The default is the configuration that trained
models best in docs/results.md (issue 17): ``init='select'`` with ``select_margin_keep=100``,
``schedule='none'`` and ``target_checkpoints='auto'`` (``trajectory:4/4`` for this selection). Each
round the model writes 300 texts from its class prefix, the 100 that read most plainly as their
class under the builder's label filter stay, and the 10 whose batch gradient is closest to the real
data's target are kept (exact lm_head distance, both gradients taken at the end of a 20-step LoRA
fine-tuning on the real pool), with no ADMM. ``--init lm --schedule admm`` is the ADMM round, 0.1.0's
default: 4 outer x 10 inner steps and 40 refinement steps, at theta0. Its ADMM settings follow the
authors' reference scripts (lr 0.008, top-k 200, B = 10, grad clip 1, 50 real examples per target) but for the schedule
(``schedule='paper'``: the authors' 30 x 50, about 16 minutes a round on a 2-core CPU, estimated
from the measured stages), the init, the vocabulary with punctuation and the refinement after ADMM,
for reasons measured on SmolLM2 in docs/synthesizer.md. The reference behaviour is
``--schedule paper --init random --vocab-filter words --projection-beams 1``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from hf_gradmm.arguments import SEED_MAX, TaskArguments, check_choices, check_number, report_targets
from hf_gradmm.targets.coverage import check_coverage
from hf_gradmm.targets.privacy import check_config
from hf_gradmm.targets.scorer import check_scorer

# schedule -> (outer_steps, inner_steps, refine_steps, refine_gradients); seconds per round in docs/performance.md
Schedule = Literal["none", "admm", "fast", "quick", "paper", "default"]
SCHEDULES = {
    "none": (0, 0, 0, "exact"),
    "admm": (4, 10, 40, "exact"),
    "fast": (3, 5, 40, "changed"),
    "quick": (2, 5, 10, "exact"),
    "paper": (30, 50, 0, "exact"),
    "default": (4, 10, 40, "exact"),  # 'admm' under its 0.1.0 name (the default then): older configs still run
}


def chooses_only(values: Mapping) -> bool:
    """Whether a run (its config as a dict) only chooses among texts the model wrote: init 'select' with no
    ADMM and no refinement steps, as the default does. Its first batch is then its last, so reports show
    one matching distance, and the card says the texts were chosen, not optimised."""
    return values.get("init") == "select" and not values.get("outer_steps") and not values.get("refine_steps")


@dataclass
class GradMatchConfig(TaskArguments):
    """Configuration of :class:`~hf_gradmm.GradMatchSynthesizer` (task fields come from TaskArguments).

    One field per option, each a CLI flag and a YAML key; fields with a fixed set of values are
    ``Literal`` types (the CLI lists them as choices; a wrong value is refused with the list).
    The runtime fields at the end (``output_dir`` ... ``use_cpu``) say where and how a run reports;
    every other field is part of the fingerprint a resume is checked against.
    """

    # ---- what to produce -----------------------------------------------------------------------
    per_class: int = field(
        default=10,
        metadata={"help": "Synthetic texts per class. Made in rounds of texts_per_round; the last round may be cut."},
    )
    texts_per_round: int = field(
        default=10,
        metadata={
            "help": "B: synthetic sequences optimised jointly in one round to match the class target "
            "(reference: 10). Their mean gradient is what is matched."
        },
    )
    seq_len: int = field(
        default=0,
        metadata={
            "help": "Free tokens per synthetic text (template and lead tokens excluded). 0 = auto: the mean "
            "token length of the class's target examples, as the reference code does, capped at 128 "
            "(with a warning)."
        },
    )
    second_seq_len: int = field(
        default=0,
        metadata={
            "help": "Sentence-pair tasks: free tokens of the second segment (--seq-len is then the first's). 0 = "
            "auto: the mean token length of the class's target examples' second segments, capped at 128."
        },
    )
    # ---- ADMM ----------------------------------------------------------------------------------
    schedule: Schedule = field(
        default="none",
        metadata={
            "help": "Steps per round, as a preset (outer_steps x inner_steps, refine_steps): 'none' 0 x 0, 0 (the "
            "default: no ADMM and no refinement, the init is the output; with init 'select' a pure selection, "
            "~30 s per round of B = 10 on a 2-core CPU; with init 'lm' the model's own samples through the engine, "
            "the no-target control), 'admm' 4 x 10, 40 (0.1.0's default, named 'default' then, which still works: "
            "~2-2.5 min per round, what the ADMM results were measured with), 'fast' 3 x 5, 40 with "
            "refine_gradients 'changed' (~1.6 min; on SmolLM2 its mean distance was 5% above 'admm''s over 6 "
            "rounds; 3 of its training sets trained as 'admm''s, +0.7 points [-2.8, +4.0]), 'quick' 2 x 5, 10 "
            "(~40 s: for trying things out; its data quality is not measured), 'paper' 30 x 50, 0 (the authors' "
            "schedule, no refinement: ~16 min per round, estimated from the measured stages). outer_steps, "
            "inner_steps and refine_steps override it (with init 'select' the ADMM round then starts from the "
            "selection). docs/performance.md has the measurements."
        },
    )
    outer_steps: int = field(
        default=0,
        metadata={"help": "ADMM outer iterations per round; 0 = the schedule's (none: 0, admm: 4, paper: 30)."},
    )
    inner_steps: int = field(
        default=0,
        metadata={"help": "Adam steps on X per outer iteration (x-step); 0 = the schedule's (admm: 10; paper: 50)."},
    )
    lr: float = field(default=0.008, metadata={"help": "Adam learning rate of the x-step (reference: 0.008)."})
    rho: float = field(
        default=1.0,
        metadata={
            "help": "ADMM penalty rho of the augmented Lagrangian rho/2 ||X - E[Z] + L/rho||^2 (sum over "
            "elements). The reference sweeps 0.01, 0.1, 0.5, 1, 5; 1 is this project's default."
        },
    )
    grad_clip: float = field(
        default=1.0, metadata={"help": "Clip the norm of X's gradient to this value per step; 0 = off."}
    )
    lm_coeff: float = field(
        default=0.0,
        metadata={"help": "Weight of the LM negative log-likelihood of Z given X in the x-step (reference: 0, off)."},
    )
    # ---- projection (z-step) -------------------------------------------------------------------
    topk: int = field(
        default=200,
        metadata={"help": "Cosine-nearest allowed tokens per position the projection picks among."},
    )
    vocab_filter: Literal["words", "words+punct", "all"] = field(
        default="words+punct",
        metadata={
            "help": "Allowed vocabulary: 'words' (word-like tokens: letters with an inner apostrophe or hyphen, "
            "<= 17 chars; the reference default), 'words+punct' (adds . , ! ? ; : ' \" ( ) -; our default: the "
            "LM-written texts it allows are readable sentences; see docs/synthesizer.md), or 'all'."
        },
    )
    projection: Literal["reference", "guided"] = field(
        default="reference",
        metadata={
            "help": "'reference': among the top-k, the token the LM scores highest (the authors' projection). "
            "'guided': LM log-probability mixed with the candidate's first-order effect on the matching "
            "distance (HotFlip/GCG style). Both are measured in docs/synthesizer.md."
        },
    )
    projection_guidance: float = field(
        default=0.5,
        metadata={"help": "Guided projection: weight in [0, 1] of the matching term against the LM term."},
    )
    projection_beams: int = field(
        default=4,
        metadata={
            "help": "Beam width of the projection. 1: greedy, one token per position (the authors'). W > 1: beam "
            "search keeps the W best partial texts per row by summed step score, and each row then takes the beam "
            "that gives its batch the lowest exact matching distance. Default 4: on SmolLM2 it is what lets the "
            "ADMM iterates beat their LM-written start (docs/synthesizer.md); costs W times the projection's rows."
        },
    )
    projection_prefix: str | None = field(
        default=None,
        metadata={
            "help": "LM prefix of the projection and of LM-written inits, with {description}, {domain} and "
            "{label_word} slots filled per class. Default: 'Here is a {description} {domain}:'. It names the "
            "class and keeps the texts on topic; it is not part of the output unless keep_prefix."
        },
    )
    keep_prefix: bool = field(default=False, metadata={"help": "Prepend the projection prefix to the output texts."})
    refine_steps: int = field(
        default=-1,
        metadata={
            "help": "After ADMM, token-swap steps on the best projected batch (GCG style: first-order proposals, "
            "exact acceptance, mean NLL kept within max_nll_increase of the start). 0 = the paper's method alone; "
            "-1 = the schedule's (40; quick: 10; paper: 0). On SmolLM2 this is what brings the texts below the "
            "model's own samples (docs/synthesizer.md)."
        },
    )
    max_nll_increase: float = field(
        default=1.0,
        metadata={
            "help": "Refinement: largest rise of the batch's mean NLL (nats/token, given the prefix) it accepts."
        },
    )
    refine_gradients: Literal["auto", "exact", "changed"] = field(
        default="auto",
        metadata={
            "help": "Refinement: 'auto' = the schedule's ('changed' for 'fast', else 'exact'). After an accepted "
            "swap, 'exact' recomputes every row's gradient for the next "
            "proposals (a forward and backward of the whole batch), 'changed' only the swapped row's, the other "
            "rows' proposals kept until a step finds no improving swap (then all anew). Distances stay exact "
            "either way; 'changed' is a different, faster search (docs/performance.md)."
        },
    )
    # ---- init ----------------------------------------------------------------------------------
    init: Literal["random", "real", "lm", "select"] = field(
        default="select",
        metadata={
            "help": "'select' (the default): the B of select_pool texts the model writes from the projection prefix "
            "whose batch has the lowest exact matching distance (engine/select.py), among the select_margin_keep "
            "plainest. 'lm': B such texts as the first projected batch of the ADMM round (0.1.0's default: "
            "readable from the start). 'random': random-normal candidate batches scaled to "
            "the model's mean embedding norm, the best by matching distance (the reference default). 'real': the B "
            "real target examples whose own gradients are closest to the target (not private)."
        },
    )
    init_temperature: float = field(
        default=0.8, metadata={"help": "Sampling temperature of the 'lm' and 'select' inits' draws (and nothing else)."}
    )
    select_pool: int = field(
        default=300,
        metadata={
            "help": "init 'select': texts the model writes per round to choose the B from (each run once; "
            "300 on SmolLM2 and 2 CPU cores: 27-30 s per round on a quiet day, 37-52 s on slower ones; "
            "docs/performance.md)."
        },
    )
    select_margin_keep: int = field(
        default=100,
        metadata={
            "help": "init 'select' only (other inits set it to 0): > 0 first keeps the select_margin_keep of the "
            "select_pool texts that the builder's label filter (the task's hand-written demonstrations, "
            "calibrated) reads most plainly as their own class (the largest label margins), then chooses the B "
            "among them by the matching distance (engine/select.py). Equal to texts_per_round it is a control: the "
            "B plainest texts, no matching. 0: off (the plain selection). 100 of 300, with the trajectory:4/4 "
            "target that target_checkpoints 'auto' gives it: the best configuration measured on Rotten Tomatoes, "
            "hence the default (docs/results.md); rounds 35-38 s on SmolLM2 and 2 CPU cores, after a 20-step "
            "fine-tuning of 21-24 s."
        },
    )
    select_scorer: str = field(
        default="",
        metadata={
            "help": "init 'select' only: a second causal LM (a registered name such as gemma3-270m, a folder or a "
            "Hub id) whose gradients choose the batch among the model's texts (targets/scorer.py): its own "
            "targets at the same target_checkpoints (trajectory:K fine-tunes it), each text scored as it "
            "tokenises it. For data meant to train that model. Empty (the default): the model's own gradients "
            "choose. Needs schedule 'none' and lm_head matching; refused under DP."
        },
    )
    select_scorer_share: float = field(
        default=1.0,
        metadata={
            "help": "With select_scorer only: the scorer's share of the choice, in (0, 1]. 1 (the default): the "
            "scorer alone chooses. Below 1: the batch minimises (1 - share) x the model's own distance + share x "
            "the scorer's, each divided by its value at the choice's start (the first texts_per_round "
            "candidates), so that neither model's scale decides (engine/select.py): one set chosen for both "
            "models. 0.5 weighs them equally."
        },
    )
    coverage_weight: float = field(
        default=0.0,
        metadata={
            "help": "init 'select' only: > 0 cuts each class's real target examples into texts_per_round groups "
            "of similar gradients (targets/coverage.py) and scores text j of the batch by the batch distance plus "
            "this weight times its distance to group j's mean gradient, so a batch covers the class's modes. "
            "0: off (the batch distance alone). Needs lm_head matching at theta0; refused under DP."
        },
    )
    init_candidates: int = field(
        default=100,
        metadata={
            "help": "Random-init candidate batches to score (reference: 500; 100 costs a fifth of the scoring "
            "forwards; how much the best candidate's distance depends on it was not measured)."
        },
    )
    # ---- objective -----------------------------------------------------------------------------
    distance: Literal["cos", "l2", "l1+l2"] = field(
        default="cos", metadata={"help": "Matching distance: 'cos' (1 - cosine), 'l2' (squared), 'l1+l2'."}
    )
    target_centering: Literal["off", "common"] = field(
        default="off",
        metadata={
            "help": "'off': match G_c. 'common': subtract the classes' mean target C from the target and from the "
            "synthetic gradient (match G - C to G_c - C), so the class-specific part is what counts."
        },
    )
    target_control: Literal["off", "swapped", "random"] = field(
        default="off",
        metadata={
            "help": "A control run, to test whether the target is what makes the texts train: 'swapped' matches "
            "each class's texts to the next class's target (same label word), 'random' to a random direction of "
            "the same norm. 'off': the real run. A control's dataset card says it is one."
        },
    )
    matched_params: str = field(
        default="lm_head",
        metadata={
            "help": "Parameters whose gradient is matched: 'lm_head' (closed form, fast), 'peft' (the LoRA layers "
            "of a PEFT model), or a regular expression over linear-module names, e.g. 'model\\.layers\\.29\\.' "
            "(per-example hooks and double backward; eager attention)."
        },
    )
    # ---- targets along the fine-tuning trajectory ----------------------------------------------
    target_checkpoints: str = field(
        default="auto",
        metadata={
            "help": "Comma-separated checkpoints the class targets are computed at; the x-step matches all of them "
            "(weighted mean of the distances). 'auto' (the default): 'trajectory:4/4' for the selection (init "
            "'select'), which trained best with it in docs/results.md, and 'theta0' where that cannot be used or "
            "was not measured (other inits, DP, coverage, matched_params 'peft', several processes). "
            "'theta0': the model as given (the paper). 'trajectory:K': K evenly "
            "spaced checkpoints of a short fine-tuning on the real target pool (trajectory_* fields), saved in "
            "output_dir/trajectory; 'trajectory:K/i': the i-th of them alone (trajectory:4/4, the end of the "
            "fine-tuning, is the distance that predicted accuracy best in docs/synthesizer.md). "
            "A local folder or Hub id: a PEFT adapter of the model or a full model with the "
            "same vocabulary (e.g. a checkpoint of your own Trainer run). Example: 'theta0,trajectory:2'."
        },
    )
    target_checkpoint_weights: str = field(
        default="",
        metadata={
            "help": "Comma-separated weight per checkpoint, in the expanded order of target_checkpoints "
            "(trajectory:K counts K); normalised to sum 1. Empty: equal weights."
        },
    )
    trajectory_finetune: Literal["lora", "full"] = field(
        default="lora",
        metadata={
            "help": "trajectory:K fine-tuning: 'lora' (adapters on every linear layer; the K checkpoints share one "
            "copy of the base model) or 'full' (K full models in memory)."
        },
    )
    trajectory_steps: int = field(
        default=20,
        metadata={
            "help": "trajectory:K: optimizer steps of the fine-tuning; checkpoints every trajectory_steps / K steps "
            "(must divide). 20 is where SmolLM2's class targets separate (docs/trajectory.md)."
        },
    )
    trajectory_lr: float = field(
        default=0.0,
        metadata={"help": "trajectory:K learning rate; 0 = the evaluation harness's (LoRA 5e-4, full 2e-5)."},
    )
    trajectory_batch_size: int = field(default=8, metadata={"help": "trajectory:K training batch size."})
    # ---- real data -----------------------------------------------------------------------------
    real_split: Literal["train", "validation"] = field(
        default="train", metadata={"help": "Split the real pool is drawn from: 'train' or 'validation'."}
    )
    target_examples: int = field(
        default=50,
        metadata={"help": "Real examples per class whose mean gradient is the target (reference: 50)."},
    )
    heldout_examples: int = field(
        default=10,
        metadata={"help": "Further real examples per class, never in a target, for the calibration report."},
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "Report per class the distance to the class target of held-out real texts, other classes' "
            "texts, the model's own sampled texts, and the GRADMM texts (initial and final)."
        },
    )
    # ---- differential privacy --------------------------------------------------------------------
    dp_epsilon: float = field(
        default=0.0,
        metadata={
            "help": "Differential privacy of the class targets: epsilon > 0 clips every target example's gradient, "
            "adds Gaussian noise once per class target (calibrated by dp-accounting) and refuses every option "
            "that would let real data reach the output another way. 0 = off (docs/privacy.md)."
        },
    )
    dp_delta: float = field(
        default=1e-5,
        metadata={"help": "DP delta; keep it well below 1 / (number of target examples)."},
    )
    dp_clip_norm: float = field(
        default=1.0,
        metadata={"help": "DP: per-example gradient norm bound C (lm_head: ||a|| ||h||, computed in closed form)."},
    )
    dp_neighbouring: Literal["add_remove", "replace_one"] = field(
        default="add_remove",
        metadata={
            "help": "DP neighbouring relation: 'add_remove' (one target example added or removed; sensitivity C/n) "
            "or 'replace_one' (one replaced; 2C/n). n = target_examples, a public count."
        },
    )
    dp_public_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "DP with target_checkpoints folders: assert they never saw the private data or were trained "
            "with DP (their budget is not included in dp_epsilon). Without it, DP mode refuses them."
        },
    )
    # ---- run -----------------------------------------------------------------------------------
    seed: int = field(default=42, metadata={"help": "Seed of every random choice: same seed, same texts."})
    dtype: Literal["float32", "bfloat16"] = field(
        default="float32", metadata={"help": "Compute dtype of the model: 'float32' or 'bfloat16'."}
    )
    target_batch_size: int = field(
        default=16, metadata={"help": "Real examples per forward pass when computing targets."}
    )
    # ---- runtime: where and how a run reports, not what it computes (a resume may change these) ----
    output_dir: str = field(
        default="gradmm_output",
        metadata={
            "help": "Where rounds, the final dataset (save_to_disk), config.yaml and metrics.json go.",
            "aliases": ["--output"],
        },
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue after the last finished round in output_dir; refused if the config changed.",
        },
    )
    logging_steps: int = field(default=1, metadata={"help": "Log every N outer iterations."})
    report_to: str = field(
        default="jsonl",
        metadata={
            "help": "Where the run's logs go, comma-separated: 'jsonl' (append every log to "
            "output_dir/log_history.jsonl), any of TrainingArguments.report_to's integrations ('tensorboard', "
            "'wandb', 'mlflow', 'trackio', ...: transformers' own callbacks, event files under output_dir/runs for "
            "TensorBoard; their packages are optional extras), 'all' (jsonl and every installed integration) or "
            "'none' (callbacks only).",
        },
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})
    num_processes: int = field(
        default=1,
        metadata={
            "help": "Processes to shard the work over (CLI: relaunches itself with `accelerate launch`): the "
            "real examples of each target and the rounds are split between them; same seed, same texts as one "
            "process with the same target_checkpoints ('auto' is theta0 with several processes, trajectory:4/4 for "
            "one process's selection: pass it explicitly to compare). Under `accelerate launch` the launcher's "
            "process count is used and this field is ignored.",
        },
    )
    use_cpu: bool = field(
        default=False,
        metadata={
            "help": "Compute on the CPU even when a CUDA GPU is available (as TrainingArguments.use_cpu). By "
            "default the model and every tensor of the run go to the GPU (under a multi-GPU launch, each process "
            "to its own); a model loaded with a device_map stays where it is.",
        },
    )

    def __post_init__(self) -> None:
        check_choices(self)
        report_targets(self.report_to)  # an unknown name or a missing package: refused before any work
        super().__post_init__()  # the task: an unknown name or bad task options refused when parsed
        for name in (
            *("per_class", "texts_per_round", "topk", "select_pool", "init_candidates", "target_examples"),
            *("trajectory_steps", "trajectory_batch_size", "target_batch_size", "logging_steps", "num_processes"),
        ):
            check_number(self, name, 1)
        for name, note in (
            *(("seq_len", "0 = auto"), ("second_seq_len", "0 = auto")),
            *(("outer_steps", "0 = the schedule's"), ("heldout_examples", "")),
        ):
            check_number(self, name, 0, note=note)
        if self.second_seq_len and not self.to_task().is_pair:
            raise ValueError(
                f"--second-seq-len {self.second_seq_len} is the second segment's length of a sentence-pair task, but "
                f"task {self.task!r} has one text per example: use --seq-len, or drop --second-seq-len."
            )
        check_number(self, "inner_steps", 0, note="0 = the schedule's")
        check_number(self, "refine_steps", -1, note="-1 = the schedule's, 0 = off")
        check_number(self, "projection_beams", 1, self.topk, note="at most --topk")
        check_number(self, "seed", 0, SEED_MAX)
        for name in ("lr", "rho", "init_temperature", "dp_clip_norm"):
            check_number(self, name, 0, low_open=True)
        for name, note in (("grad_clip", "0 = off"), ("lm_coeff", "0 = off"), ("dp_epsilon", "0 = off")):
            check_number(self, name, 0, note=note)
        check_number(self, "max_nll_increase", 0)
        check_number(self, "trajectory_lr", 0, note="0 = the evaluation harness's")
        check_number(self, "projection_guidance", 0, 1)
        check_number(self, "coverage_weight", 0)
        check_number(self, "select_margin_keep", 0, note="0 = off")
        check_number(self, "select_scorer_share", 0, 1, low_open=True, note="1 = the scorer alone chooses")
        check_number(self, "dp_delta", 0, 1, low_open=True, high_open=True)
        outer, inner, refine, gradients = SCHEDULES[self.schedule]
        self.refine_gradients = gradients if self.refine_gradients == "auto" else self.refine_gradients
        self.outer_steps = self.outer_steps or outer  # 0: the schedule's
        self.inner_steps = self.inner_steps or inner
        self.refine_steps = refine if self.refine_steps == -1 else self.refine_steps
        if self.outer_steps and not self.inner_steps:  # only schedule 'none' leaves it at 0
            raise ValueError(
                f"--outer-steps {self.outer_steps} needs --inner-steps (inner_steps) >= 1 too: schedule 'none' has "
                "no steps of its own."
            )
        if self.target_checkpoints.strip() == "auto":
            self.target_checkpoints = self.auto_checkpoints()
        check_config(self)
        if self.init == "select" and self.select_pool < self.texts_per_round:
            raise ValueError(
                f"init 'select' chooses texts_per_round={self.texts_per_round} texts from select_pool="
                f"{self.select_pool}; raise --select-pool to at least {self.texts_per_round} (300 is the default)."
            )
        if self.init != "select":
            self.select_margin_keep = 0  # it shortlists the selection's candidates: no other init has any
        if self.select_margin_keep and not self.texts_per_round <= self.select_margin_keep <= self.select_pool:
            default = self.select_margin_keep == type(self).__dataclass_fields__["select_margin_keep"].default
            raise ValueError(
                f"--select-margin-keep {self.select_margin_keep}{' (the default)' if default else ''} must lie between "
                "--texts-per-round "
                f"{self.texts_per_round} (the batch is chosen from the shortlist) and --select-pool {self.select_pool} "
                "(the shortlist is cut from the pool): set it in that range, or 0 for the plain selection."
            )
        check_coverage(self)
        check_scorer(self)
        self.checkpoint_specs()  # refuses a malformed target_checkpoints / weights now, not after loading
        if self.matched_params == "peft" and self.target_checkpoints.strip() != "theta0":
            raise ValueError(
                "matched_params='peft' matches the given model's own adapters, which other checkpoints do not "
                "share; with target_checkpoints other than theta0 use 'lm_head' or a module regular expression."
            )

    def auto_checkpoints(self) -> str:
        """What ``target_checkpoints='auto'`` stands for: the end of the short fine-tuning on the real pool
        (``trajectory:4/4``) for the selection, whose sets it made train best on Rotten Tomatoes
        (docs/results.md); ``theta0`` for the other inits (their measured rows are at theta0), under DP (the
        fine-tuning reads the private examples without noise), with coverage (its groups are taken at theta0),
        for ``matched_params='peft'`` (no other checkpoint has the model's own adapters) and in a multi-process
        run (the fine-tuning runs in one process: targets/trajectory.py)."""
        selection = self.init == "select" and not self.coverage_weight and self.matched_params != "peft"
        processes = max(self.num_processes, int(os.environ.get("WORLD_SIZE", "1")))  # as accelerate launches it
        return "trajectory:4/4" if selection and not self.dp_epsilon and processes == 1 else "theta0"

    def checkpoint_specs(self) -> list[tuple[str, float]]:
        """``target_checkpoints`` expanded: one ``(spec, weight)`` per checkpoint, weights summing to 1.
        ``trajectory:K`` becomes ``trajectory:K/1`` ... ``trajectory:K/K``."""
        entries = [e.strip() for e in self.target_checkpoints.split(",") if e.strip()]
        if not entries:
            raise ValueError("target_checkpoints is empty; use 'theta0' (the paper) or e.g. 'trajectory:2'.")
        specs = []
        for entry in entries:
            if entry.startswith("trajectory:"):
                count, _, index = entry.split(":", 1)[1].partition("/")
                if (
                    not count.isdigit()
                    or int(count) < 1
                    or index
                    and not (index.isdigit() and 1 <= int(index) <= int(count))
                ):
                    raise ValueError(
                        f"target_checkpoints entry {entry!r}: write trajectory:K with K >= 1 (all K checkpoints, e.g. "
                        "trajectory:2) or trajectory:K/i with 1 <= i <= K (the i-th only, e.g. trajectory:4/4)."
                    )
                k = int(count)
                if self.trajectory_steps % k:
                    raise ValueError(
                        f"trajectory:{k} needs trajectory_steps divisible by {k} (got {self.trajectory_steps}): "
                        f"checkpoints are saved every trajectory_steps / K steps. Use e.g. --trajectory-steps {k * 10}."
                    )
                specs += [f"trajectory:{k}/{i}" for i in ([int(index)] if index else range(1, k + 1))]
            else:
                specs.append(entry)
        if len(set(specs)) != len(specs):
            raise ValueError(f"target_checkpoints {self.target_checkpoints!r} names a checkpoint twice.")
        if self.target_checkpoint_weights.strip():
            try:
                weights = [float(w) for w in self.target_checkpoint_weights.split(",")]
            except ValueError:
                raise ValueError(
                    f"target_checkpoint_weights {self.target_checkpoint_weights!r} is not a comma-separated list "
                    "of numbers."
                ) from None
            if len(weights) != len(specs) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(
                    f"target_checkpoint_weights needs {len(specs)} non-negative numbers with a positive sum, one per "
                    f"checkpoint of {specs}; got {self.target_checkpoint_weights!r}."
                )
        else:
            weights = [1.0] * len(specs)
        return [(s, w / sum(weights)) for s, w in zip(specs, weights)]

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> dict:
        """The fields that decide which texts a run makes (compared on resume): all but the runtime ones
        and ``schedule`` (the steps it set are compared themselves, so a folder from before presets resumes);
        fields added later are left out while at their default, so older folders resume too."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in RUNTIME_FIELDS and k not in ("schedule", "task_name") and LATER_DEFAULTS.get(k, object()) != v
        }


# Fields added after folders were made, with the value that means "as before".
LATER_DEFAULTS = {
    "target_control": "off",
    "select_pool": 300,
    "select_margin_keep": 0,
    "coverage_weight": 0.0,
    "select_scorer": "",
    "select_scorer_share": 1.0,
    "encoding": None,
    "second_seq_len": 0,
    "refine_gradients": "exact",
    **dict.fromkeys(("train_file", "validation_file", "test_file", "domain", "class_descriptions"), None),
}

# The runtime section's fields: where and how a run reports, not what it computes; a resume may change them.
RUNTIME_FIELDS = ("output_dir", "resume", "logging_steps", "report_to", "disable_tqdm", "num_processes", "use_cpu")
