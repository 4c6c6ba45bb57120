"""``GradMatchSynthesizer``: GRADMM in the ``transformers.Trainer`` style.

The synthesizer is the surface a user drives: a config, callbacks, a ``TrainerState``, ``train()``
with resume. What it runs lives one layer down, each part in one file:

- ``targets/setup.py``: the set-up computed once (real pool, class targets, DP, checkpoints);
- ``engine/round.py``: one ADMM round (z-step, x-step, dual step, refinement) as a function;
- ``rundir.py``: the output folder (round files, fingerprint, resume, final outputs);
- ``diagnostics.py``: the per-class figures and the calibration table of metrics.json.

The run is a schedule of rounds (B texts of one class each); every finished round is written to
``output_dir/rounds`` at once, and ``resume=True`` continues after the last one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, Features, Value
from transformers import TrainerControl, TrainerState

from hf_gradmm import rundir
from hf_gradmm.arguments import report_targets
from hf_gradmm.callbacks import JsonlLoggerCallback, SynthesisProgressCallback, reporting_callbacks
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.diagnostics import run_metrics
from hf_gradmm.distributed import barrier, device, gather, world
from hf_gradmm.engine.gradients import model_state_kept
from hf_gradmm.engine.round import RoundRecord, run_round
from hf_gradmm.engine.stages import stage
from hf_gradmm.models import check_model_name, load_model_and_tokenizer
from hf_gradmm.rundir import SynthesisError
from hf_gradmm.targets.scorer import Scorer, text_scorer
from hf_gradmm.targets.setup import Prepared, prepare
from hf_gradmm.tasks import TaskSpec, load_task

__all__ = ["GradMatchSynthesizer", "RoundRecord", "SynthesisError", "SynthesisResult", "SyntheticText"]


@dataclass
class SyntheticText:
    """One synthetic example and how it was made."""

    text: str
    label: int
    round: int
    match_distance: float  # this text's own gradient vs its class target
    nll: float  # mean token NLL under the model (from the start token, no prefix)


@dataclass
class SynthesisResult:
    """Output of :meth:`GradMatchSynthesizer.train`: the texts, the round records, the class names,
    the figures written to metrics.json and the output folder. :meth:`to_dataset` gives the texts
    as a ``datasets.Dataset`` (``text``, ``label`` as a ``ClassLabel``, ``round``, ``match_distance``, ``nll``)."""

    texts: list[SyntheticText]
    rounds: list[RoundRecord]
    label_names: list[str]
    metrics: dict = field(default_factory=dict)
    output_dir: str | None = None

    def to_dataset(self) -> Dataset:
        features = Features(
            {
                "text": Value("string"),
                "label": ClassLabel(names=self.label_names),
                "round": Value("int32"),
                "match_distance": Value("float32"),
                "nll": Value("float32"),
            }
        )
        rows = {k: [getattr(t, k) for t in self.texts] for k in features}
        return Dataset.from_dict(rows, features=features)


class GradMatchSynthesizer:
    """Makes readable synthetic texts whose fine-tuning gradient matches real data's (GRADMM).

    Args:
        model (`PreTrainedModel`):
            A causal LM (``AutoModelForCausalLM``), or a PEFT model when ``args.matched_params == 'peft'``.
        args (`GradMatchConfig`, *optional*, defaults to `GradMatchConfig()`):
            Every option of the run.
        train_dataset (`datasets.Dataset`, *optional*):
            Real labelled data (``text``, ``label``) the targets come from; default: the task's ``train`` split.
        eval_dataset (`datasets.Dataset`, *optional*):
            Real data for ``real_split='validation'``; default: the task's validation split.
        processing_class (`PreTrainedTokenizerBase`):
            The model's tokenizer (required).
        callbacks (list of `transformers.TrainerCallback`, *optional*):
            Callback instances or classes, called as ``transformers.Trainer`` calls them.
        task (`TaskSpec`, *optional*, defaults to `args.to_task()`):
            The task: template, label words, data source.

    After :meth:`train`, :attr:`prepared` holds the run's set-up (real pool, objectives per class
    and checkpoint, text lengths), and :attr:`state` the ``TrainerState`` with the log history.
    """

    def __init__(
        self,
        model,
        args: GradMatchConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        callbacks=None,
        task: TaskSpec | None = None,
    ):
        if processing_class is None:
            raise ValueError("GradMatchSynthesizer needs processing_class=<the model's tokenizer>.")
        self.args = args or GradMatchConfig()
        if self.args.select_scorer:  # a scorer name that does not load: refused before any work
            check_model_name(self.args.select_scorer)
        self.model = model
        self.tokenizer = processing_class
        self.task = task or self.args.to_task()
        if train_dataset is None or (eval_dataset is None and self.args.real_split == "validation"):
            data, self.task = load_task(self.task)
            train_dataset = train_dataset if train_dataset is not None else data["train"]
            eval_dataset = eval_dataset if eval_dataset is not None else data["validation"]
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.output_dir = Path(self.args.output_dir)
        self.rank, self.world = world()  # several processes: each makes every world-th round
        main = self.rank == 0
        self.callbacks = [] if self.args.disable_tqdm or not main else [SynthesisProgressCallback()]
        targets = report_targets(self.args.report_to) if main else []
        if "jsonl" in targets:
            self.callbacks.append(JsonlLoggerCallback(self.output_dir))
        # report_to integrations: transformers' callbacks, called with TrainingArguments standing for args
        self._integrations, self._integration_args = reporting_callbacks(
            self.args, [t for t in targets if t != "jsonl"]
        )
        self.callbacks += self._integrations
        for callback in callbacks or []:
            self.add_callback(callback)
        self.state = TrainerState()
        self.control = TrainerControl()
        self.prepared: Prepared | None = None

    # ------------------------------------------------------------------ callbacks (Trainer API)
    def add_callback(self, callback) -> None:
        """Add a ``TrainerCallback`` instance or class."""
        self.callbacks.append(callback() if isinstance(callback, type) else callback)

    def pop_callback(self, callback):
        """Remove and return a callback, given as an instance or a class."""
        for cb in self.callbacks:
            if cb is callback or (isinstance(callback, type) and isinstance(cb, callback)):
                self.callbacks.remove(cb)
                return cb
        return None

    def remove_callback(self, callback) -> None:
        """Remove a callback, given as an instance or a class."""
        self.pop_callback(callback)

    def _event(self, name: str, **kwargs) -> None:
        """Call ``name`` on every callback, as ``transformers.Trainer`` does."""
        for callback in self.callbacks:
            args = self._integration_args if callback in self._integrations else self.args
            result = getattr(callback, name)(
                args, self.state, self.control, model=self.model, processing_class=self.tokenizer, **kwargs
            )
            if result is not None:
                self.control = result

    def log(self, logs: dict) -> None:
        """Record ``logs`` in the state's log history and pass them to every callback's ``on_log``."""
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self._event("on_log", logs=logs)

    # ------------------------------------------------------------------ set-up
    def _source(self) -> Dataset | None:
        return self.train_dataset if self.args.real_split == "train" else self.eval_dataset

    def _fingerprint(self) -> dict:
        source = self._source()
        return rundir.fingerprint(self.args, self.task, self.model, len(source) if source is not None else 0)

    def _place_model(self) -> None:
        """Put the model on this process's device (as ``Trainer`` does), unless it was loaded with a
        ``device_map`` (placed by the user or dispatched over devices): then it stays, and its
        inputs go where its embeddings are."""
        torch.manual_seed(self.args.seed)
        if self.args.dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        if getattr(self.model, "hf_device_map", None) is None:
            self.model.to(device(self.args.use_cpu))
        self.model.eval()

    def _noise(self) -> torch.Generator | None:
        """DP only: the noise generator, seeded once for the run (main process) and shared."""
        if self.args.dp_epsilon <= 0:
            return None
        seed = rundir.noise_seed(self.output_dir, self.args.resume, main=self.rank == 0)
        seed = gather(seed)[0] if self.world > 1 else seed
        return torch.Generator().manual_seed(seed)

    def _scorer(self) -> tuple[Scorer, dict]:
        """``select_scorer``: the second model, loaded and placed as the model is, its choice of texts
        (targets/scorer.py) and a report of its targets (its checkpoints, class-target cosine, seconds)."""
        dtype = torch.bfloat16 if self.args.dtype == "bfloat16" else torch.float32
        model, tokenizer = load_model_and_tokenizer(self.args.select_scorer, dtype=dtype)
        model.to(device(self.args.use_cpu)).eval().requires_grad_(False)
        trajectory = self.output_dir / rundir.TRAJECTORY_DIR / "scorer"
        score, prepared = text_scorer(
            model, tokenizer, self.task, self.args, self._source(), trajectory, shard=(self.rank, self.world)
        )
        report = {"model": self.args.select_scorer, **prepared.checkpoint_report}
        return score, report | {"target_seconds": prepared.target_seconds}

    def _schedule(self) -> list[tuple[int, int, int]]:
        """(round index, label, texts in the round) for every round of the run."""
        plan, idx = [], 0
        for c in range(self.task.num_labels):
            left = self.args.per_class
            while left > 0:
                batch = min(self.args.texts_per_round, left)
                plan.append((idx, c, batch))
                idx += 1
                left -= batch
        return plan

    def _finished_rounds(self, expected: dict) -> dict[int, RoundRecord]:
        """The rounds already on disk. The main process alone records the run; the others read
        what it found (every process refused a bad folder the same way before)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        main = self.rank == 0
        done = rundir.open_run(self.output_dir, expected, self.args.resume) if main else []
        barrier()
        if not main:
            done = rundir.open_run(self.output_dir, expected, self.args.resume, record=False)
        return {r.round: r for r in done}

    # ------------------------------------------------------------------ the run
    def train(self) -> SynthesisResult:
        """Run (or resume) the synthesis; returns the texts and writes ``output_dir``. The main process
        holds the folder's lock for the whole run: a second run on the same folder is refused at once."""
        if self.rank != 0:
            return self._train()
        with rundir.folder_lock(self.output_dir, rundir.command_line()):
            return self._train()

    def _train(self) -> SynthesisResult:
        args = self.args
        expected = self._fingerprint()
        rundir.open_run(self.output_dir, expected, args.resume, record=False)  # refuse before any heavy work
        self._place_model()
        with model_state_kept(self.model):  # the model goes back to the caller as it came
            with stage("targets"):
                scorer, scorer_report = self._scorer() if args.select_scorer else (None, None)
                self.prepared = prepare(
                    self.model,
                    self.tokenizer,
                    self.task,
                    args,
                    self._source(),
                    self.output_dir / rundir.TRAJECTORY_DIR,
                    self._noise(),
                    shard=(self.rank, self.world),
                    scorer=scorer,
                )
                if scorer_report is not None:
                    self.prepared.checkpoint_report["scorer"] = scorer_report
            done = self._finished_rounds(expected)
            if self.rank == 0:
                for problem in rundir.unreadable_rounds(self.output_dir):
                    self.log({"warning": problem})
            plan = self._schedule()
            self._run_schedule(plan, done)
            if self.world > 1:  # each process wrote its own rounds; all of them meet here
                done = {i: record for shard in gather(done) for i, record in shard.items()}
            with stage("calibration"):
                result = self._result([done[i] for i, _, _ in plan if i in done], args.calibrate and self.rank == 0)
            calibration = result.metrics.get("calibration", {})
            self.log(
                {
                    f"calibration/{name}/{key}": value
                    for name, entry in calibration.items()
                    for key, value in entry.items()
                    if isinstance(value, float)
                }
            )
            if self.rank == 0:  # the main process alone writes the dataset, config and metrics
                with stage("io"):
                    rundir.write_outputs(self.output_dir, result.to_dataset(), args.to_dict(), result.metrics)
        self._event("on_train_end", result=result)  # callbacks see the model as it was given
        return result

    synthesize = train

    def _run_schedule(self, plan: list[tuple[int, int, int]], done: dict[int, RoundRecord]) -> None:
        """Run this process's unfinished rounds of ``plan``, saving each as it finishes."""
        steps = self.args.outer_steps
        self.state = TrainerState(
            max_steps=len(plan) * steps,
            num_train_epochs=len(plan),
            is_world_process_zero=self.rank == 0,
            is_local_process_zero=self.rank == 0,
        )
        self.state.global_step = len(done) * steps
        self.state.epoch = len(done)  # finished rounds: what a progress bar resumes from
        self._event("on_train_begin")
        with _ctrl_c_remembered() as pressed:
            self._run_rounds(plan, done, pressed)

    def _run_rounds(self, plan: list[tuple[int, int, int]], done: dict[int, RoundRecord], pressed) -> None:
        """The round loop of :meth:`_run_schedule`; ``pressed()`` is true once Ctrl-C was pressed."""
        steps = self.args.outer_steps
        for round_idx, label, batch in plan:
            if round_idx in done or round_idx % self.world != self.rank:  # finished, or another process's
                continue
            where = {"round": round_idx, "rounds": len(plan), "class": self.task.label_names[label]}
            record = run_round(
                self.prepared, self.args, round_idx, label, batch, self._on_iteration(where), self._on_progress
            )
            if record.stopped_early:
                self.log({**where, "warning": record.stopped_early})
            with stage("io"):
                rundir.save_round(self.output_dir, record)
            done[round_idx] = record
            if pressed():  # a Ctrl-C whose KeyboardInterrupt Python dropped (see _ctrl_c_remembered)
                raise KeyboardInterrupt
            self.state.global_step = len(done) * steps  # also when a round stopped early
            self.state.epoch = len(done)
            self._event("on_epoch_end", finished_rounds=[done[i] for i in sorted(done)])
            self.log(
                {
                    **where,
                    "round_initial_distance": record.initial_distance,
                    "round_final_distance": record.final_distance,
                    "round_seconds": record.seconds,
                }
            )
            if self.control.should_training_stop:  # a callback asked to stop (as in Trainer)
                self.log(
                    {"warning": f"stopped by a callback after {len(done)} of {len(plan)} rounds; --resume goes on"}
                )
                break

    def _on_iteration(self, where: dict):
        """The round's hook after each outer iteration: a step for the callbacks, a log every ``logging_steps``."""

        def hook(it: int, figures: dict) -> None:
            self.state.global_step += 1
            self._event("on_step_end")
            if (it + 1) % self.args.logging_steps == 0 or it == self.args.outer_steps - 1:
                self.log({**where, **figures})

        return hook

    def _on_progress(self, name: str, step: int, steps: int) -> None:
        """A round's progress within its stages, passed to the callbacks as ``on_substep_end``
        (``stage``, ``step``, ``steps``): the progress bar moves through projections, x-steps and
        refinement steps, not only at the end of an outer iteration."""
        self._event("on_substep_end", stage=name, step=step, steps=steps)

    def _result(self, rounds: list[RoundRecord], calibrate: bool = True) -> SynthesisResult:
        texts = [
            SyntheticText(text=t, label=r.label, round=r.round, match_distance=d, nll=n)
            for r in rounds
            for t, d, n in zip(r.texts, r.per_text_distance, r.nll)
        ]
        metrics = run_metrics(self.prepared, rounds, self.args, self.world, calibrate)
        return SynthesisResult(texts, rounds, list(self.task.label_names), metrics, str(self.output_dir))


@contextmanager
def _ctrl_c_remembered() -> Iterator:
    """Within: Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` as usual and is also remembered; yields
    a function telling whether it was pressed.

    Python drops an exception raised while a finalizer runs ("Exception ignored in ..."), and the
    garbage collector runs finalizers at any moment of a round, so a Ctrl-C landing there would be
    lost and the run would go on to its end. The round loop asks after each saved round and raises
    it again. Any handler already installed (a notebook's, accelerate's) is still called."""
    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread only
        yield lambda: False
        return
    pressed = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        pressed.set()
        (previous if callable(previous) else signal.default_int_handler)(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield pressed.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
