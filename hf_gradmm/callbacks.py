"""Callbacks of the synthesizer: ordinary ``transformers.TrainerCallback`` subclasses.

The synthesizer calls them as ``transformers.Trainer`` does, with a
``TrainerState`` whose ``global_step`` counts ADMM outer iterations over all rounds, so any
TrainerCallback (early stopping aside) works as it does with a Trainer. ``on_step_end`` fires
after each outer iteration, ``on_log`` with the iteration's figures (``match_distance`` of the
projected batch, ``best_distance``, ``x_distance`` of the continuous iterate, ``round``,
``class``), ``on_epoch_end`` after each round, and ``on_substep_end`` within a round with
``stage`` (``projection``, ``x_step``, ``refine``), ``step`` and ``steps``. (The callback that fine-tunes models on the
texts as they come is :class:`hf_gradmm.evaluation.TransferCallback`.)

``report_to`` integrations (TensorBoard, W&B, MLflow, trackio, ...) are transformers' own callbacks
(:func:`reporting_callbacks`); they read ``TrainingArguments`` fields, so they get
:class:`ReportingArguments`, which stands for the synthesis config.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainingArguments
from transformers.integrations import get_reporting_integration_callbacks

from hf_gradmm.rundir import LOG_HISTORY


class SynthesisProgressCallback(TrainerCallback):
    """One progress bar over the whole run, in steps: each outer iteration is one, each refinement
    step is one, and a round without either (the default selection) is one; within an iteration the
    postfix shows the stage (``x-step 3/10``, ``projection``)."""

    def __init__(self):
        self.bar = None
        self.per_round = 1  # bar steps per round: outer iterations + refinement steps, at least 1
        self.figures = ""  # the last logged distances, shown beside the stage

    def on_train_begin(self, args, state, control, **kwargs):
        self.per_round = max(1, getattr(args, "outer_steps", 1) + getattr(args, "refine_steps", 0))
        total = state.num_train_epochs * self.per_round if state.num_train_epochs else state.max_steps
        self.bar = tqdm(total=total, desc="GRADMM", unit="step", dynamic_ncols=True)
        self.bar.update(int(state.epoch or 0) * self.per_round)  # the rounds a resumed run had finished

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)

    def on_substep_end(self, args, state, control, stage=None, step=0, steps=0, **kwargs):
        if self.bar is None or stage is None:
            return
        if stage == "refine":
            self.bar.update(1)
        self.bar.set_postfix_str(f"{stage.replace('_', '-')} {step}/{steps} {self.figures}".strip(), refresh=True)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.bar is not None:  # a round that stopped early skipped steps: catch up at its end
            self.bar.update(int(state.epoch) * self.per_round - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "round" in logs:
            self.bar.set_description(f"GRADMM round {logs['round'] + 1}/{logs['rounds']} ({logs['class']})")
        shown = {k: f"{logs[k]:.4f}" for k in ("match_distance", "best_distance", "x_distance") if k in logs}
        if shown:
            self.figures = ", ".join(f"{k}={v}" for k, v in shown.items())
            self.bar.set_postfix_str(self.figures, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonlLoggerCallback(TrainerCallback):
    """Appends every log to ``output_dir/log_history.jsonl`` (``report_to='jsonl'``).

    Args:
        output_dir (`str` or `Path`):
            The synthesis output folder; the file is created on the first log and appended to after.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOG_HISTORY

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class ReportingArguments(TrainingArguments):
    """The ``TrainingArguments`` that transformers' reporting callbacks are given during a synthesis:
    their Trainer-side fields (``output_dir``, ``run_name``, ``report_to``, ...) are set from the
    synthesis config, and what they record as the run's arguments (``to_dict``, hence
    ``to_json_string`` and ``to_sanitized_dict``) is the synthesis config itself."""

    def to_dict(self) -> dict:
        return dict(self.synthesis_config)


def reporting_callbacks(config, integrations: list[str]) -> tuple[list[TrainerCallback], TrainingArguments | None]:
    """transformers' callbacks for ``integrations`` (names of ``TrainingArguments.report_to``) and the
    arguments they are called with; TensorBoard writes under ``config.output_dir/runs`` (or
    ``TENSORBOARD_LOGGING_DIR``), as with a Trainer."""
    if not integrations:
        return [], None
    args = ReportingArguments(
        output_dir=config.output_dir,
        run_name=Path(config.output_dir).name,
        report_to=integrations,
        logging_steps=config.logging_steps,
        seed=config.seed,
        use_cpu=config.use_cpu,
        disable_tqdm=True,
    )
    args.synthesis_config = config.to_dict()
    return [cls() for cls in get_reporting_integration_callbacks(integrations)], args
