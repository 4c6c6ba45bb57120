"""Callbacks of the synthesizer: ordinary ``transformers.TrainerCallback`` subclasses.

The synthesizer calls them as ``transformers.Trainer`` does, with a
``TrainerState`` whose ``global_step`` counts ADMM outer iterations over all rounds, so any
TrainerCallback (early stopping aside) works as it does with a Trainer. ``on_step_end`` fires
after each outer iteration, ``on_log`` with the iteration's figures (``match_distance`` of the
projected batch, ``best_distance``, ``x_distance`` of the continuous iterate, ``round``,
``class``), ``on_epoch_end`` after each round. (The callback that fine-tunes models on the
texts as they come is :class:`hf_gradmm.evaluation.TransferCallback`.)
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from hf_gradmm.rundir import LOG_HISTORY


class SynthesisProgressCallback(TrainerCallback):
    """One progress bar over all outer iterations, showing the round and the current distances."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc="GRADMM", unit="it", dynamic_ncols=True)
        self.bar.update(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "round" in logs:
            self.bar.set_description(f"GRADMM round {logs['round'] + 1}/{logs['rounds']} ({logs['class']})")
        shown = {k: f"{logs[k]:.4f}" for k in ("match_distance", "best_distance", "x_distance") if k in logs}
        if shown:
            self.bar.set_postfix(shown, refresh=False)

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
