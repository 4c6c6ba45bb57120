"""``TransferCallback``: fine-tune target models on the synthetic texts and log their accuracy.

Attach it to a ``GradMatchSynthesizer`` (it fires at ``on_train_end``, and every N rounds if
asked) or call :meth:`TransferCallback.evaluate` on any texts. Each target model (a name or
a loaded ``(model, tokenizer)`` pair) is fine-tuned with the harness's recipe, the checkpoint
chosen on the real dev split, then scored once on the real test split.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from transformers import TrainerCallback

from hf_gradmm.distributed import device
from hf_gradmm.evaluation.harness import finetuned_correct, split_sample
from hf_gradmm.finetune import FinetuneConfig
from hf_gradmm.models import load_model_and_tokenizer
from hf_gradmm.tasks import TaskSpec, load_task


class TransferCallback(TrainerCallback):
    """Fine-tunes each target on the synthetic data and records real test accuracy.

    Args:
        models (`list[str]` or `dict`):
            Target models: registered names / Hub ids, or ``{name: (model, tokenizer)}``.
        task (`TaskSpec`, *optional*):
            The task; default: the synthesizer's.
        recipe (`FinetuneConfig`, *optional*, defaults to `FinetuneConfig()`):
            The fine-tuning recipe; its ``dev_examples`` and ``test_examples`` size the real dev
            and test splits, its ``head`` picks the label word or a classification head
            (``AutoModelForSequenceClassification``).
        seeds (`int`, *optional*, defaults to 1):
            Fine-tuning seeds per model.
        every_n_rounds (`int`, *optional*, defaults to 0):
            Also evaluate after every N finished rounds (0: only at the end).
    """

    def __init__(
        self,
        models: list[str] | dict,
        task: TaskSpec | None = None,
        recipe: FinetuneConfig | None = None,
        seeds: int = 1,
        every_n_rounds: int = 0,
    ):
        self.models = models if isinstance(models, dict) else {name: None for name in models}
        self.task = task
        self.recipe = recipe or FinetuneConfig()
        self.seeds = seeds
        self.every_n_rounds = every_n_rounds
        self.history: list[dict] = []
        self._splits = None

    def _prepare(self, task: TaskSpec | None) -> None:
        if self._splits is None:
            data, self.task = load_task(self.task or task)
            self._splits = (
                split_sample(data["validation"], self.recipe.dev_examples, seed=0),
                split_sample(data["test"], self.recipe.test_examples, seed=1),
            )

    def _model(self, name: str):
        if self.models[name] is None:
            self.models[name] = load_model_and_tokenizer(name, device=device())
        return self.models[name]

    def evaluate(self, texts: list[str], labels: list[int], task: TaskSpec | None = None) -> dict[str, dict]:
        """Per target model: test accuracy per seed, mean and std, and the dev-chosen steps."""
        self._prepare(task)
        dev, test = self._splits
        out = {}
        for name in self.models:
            model, tok = self._model(name)
            accs, steps = [], []
            for seed in range(self.seeds):
                training = (list(texts), list(labels))
                correct, _, best_step = finetuned_correct(model, tok, self.task, training, dev, test, self.recipe, seed)
                accs.append(sum(correct) / len(correct))
                steps.append(best_step)
            out[name] = {
                "test_accuracy": accs,
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "best_steps": steps,
            }
        return out

    def _record(self, args, state, texts, labels, when: str) -> dict | None:
        if not state.is_world_process_zero:  # several synthesis processes: the main one evaluates
            return None
        scores = self.evaluate(texts, labels, args.to_task() if hasattr(args, "to_task") else None)
        entry = {"when": when, "texts": len(texts), "scores": scores}
        self.history.append(entry)
        logs = {f"transfer/{name}/test_accuracy": s["mean"] for name, s in scores.items()}
        state.log_history.append({**logs, "step": state.global_step, "when": when})
        output_dir = getattr(args, "output_dir", None)
        if output_dir:
            Path(output_dir, "transfer.json").write_text(json.dumps(self.history, indent=2))
        return entry

    def on_epoch_end(self, args, state, control, finished_rounds=None, **kwargs):
        if self.every_n_rounds and finished_rounds and len(finished_rounds) % self.every_n_rounds == 0:
            texts = [t for r in finished_rounds for t in r.texts]
            labels = [r.label for r in finished_rounds for _ in r.texts]
            self._record(args, state, texts, labels, f"after {len(finished_rounds)} rounds")

    def on_train_end(self, args, state, control, result=None, **kwargs):
        if result is not None:
            self._record(args, state, [t.text for t in result.texts], [t.label for t in result.texts], "end")
