"""``hf-gradmm study``: which distance to the class targets predicts how well a training set trains?

The engine lowers one distance (the theta0 lm_head cosine by default), and a lower distance has
not meant a better training set (../GRADMM.md, "Selection"). This study takes training sets that
``hf-gradmm evaluate`` already fine-tuned on (their texts saved in ``<stem>_training/``, their
test accuracies in results.json), measures each set's distance to a synthesis run's class
targets under several definitions, and reports the rank correlation (Spearman, with a bootstrap
interval over the sets) of each with the set's mean test accuracy. A distance that predicts
training value correlates *negatively* (lower distance, higher accuracy).

Definitions (each the mean over classes of the class's texts' batch distance, the engine's
``distance`` kind, against the targets the synthesis's real pool gives):

- ``theta0``: the output projection's gradient at the model as given (the engine's default);
- ``trajectory_k``: the same at the k-th of ``--trajectory`` LoRA checkpoints of a short
  fine-tuning on the real pool (``trajectory:K``); ``trajectory_mean``: their mean with theta0;
- ``contrastive``: theta0 distance to the own class's target minus the mean distance of the same
  texts (with the other label word) to the other classes' targets: closer to its own than to others;
- ``last_block``: the gradient of the last decoder layer's linear weights (per-example autograd).

Two predictors that are not distances sit beside them as controls: ``nll`` (mean NLL of the texts
under the generator: fluency) and ``label_margin`` (the generator's zero-shot log-probability
margin of each text's own label word: how clearly the text reads as its class).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from hf_gradmm.diagnostics import texts_distance
from hf_gradmm.distributed import device
from hf_gradmm.engine.gradients import model_state_kept
from hf_gradmm.evaluation.baselines import gradmm_texts
from hf_gradmm.evaluation.harness import read_results
from hf_gradmm.evaluation.report import write_json_and_table
from hf_gradmm.lm import label_margins, mean_text_nll
from hf_gradmm.models import load_model_and_tokenizer
from hf_gradmm.rundir import read_synthesis_dir
from hf_gradmm.targets.setup import Prepared, prepare
from hf_gradmm.tasks import load_task


@dataclass
class StudyArguments:
    """What ``hf-gradmm study`` correlates."""

    results: str = field(
        default="results.json",
        metadata={
            "help": "hf-gradmm evaluate results, comma-separated (the same model, recipe and test split); "
            "every training set they fine-tuned on is one point of the study."
        },
    )
    synthesis: str | None = field(
        default=None,
        metadata={"help": "A synthesis output folder: its real pool, seed and distance kind define the targets."},
    )
    model: str | None = field(
        default=None, metadata={"help": "Which evaluated model's accuracies to correlate (default: the first)."}
    )
    trajectory: int = field(default=4, metadata={"help": "LoRA checkpoints of the trajectory definitions (0: none)."})
    last_block: bool = field(default=True, metadata={"help": "Include the last decoder layer's gradient distance."})
    resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples of each correlation's interval."})
    output: str = field(default="study.json", metadata={"help": "Study JSON; a .md table beside it."})

    def __post_init__(self) -> None:
        if self.trajectory < 0 or self.resamples < 1:
            raise ValueError(f"trajectory must be >= 0 and resamples >= 1 (got {self.trajectory}, {self.resamples}).")


def training_sets(paths: list[Path], model: str | None) -> tuple[str, list[dict]]:
    """The evaluated training sets of ``paths``' results: {name, method, file, accuracy (mean over
    seeds), seeds}; refuses results of different recipes or test splits."""
    sets: dict[str, dict] = {}
    for path, results in zip(paths, read_results(paths)):
        runs = [r for r in results["runs"] if r.get("training_file")]
        model = model or (runs[0]["model"] if runs else None)
        for run in (r for r in runs if r["model"] == model):
            name = f"{path.stem}:{run['method']}/set{run['set']}"
            entry = sets.setdefault(name, {"name": name, "method": run["method"], "file": run["training_file"]})
            entry.setdefault("acc", []).append(run["test_accuracy"])
    if not sets:
        raise ValueError(f"No fine-tuned training sets for model {model!r} in {', '.join(map(str, paths))}.")
    out = []
    for entry in sets.values():
        accuracies = entry.pop("acc")
        out.append({**entry, "accuracy": statistics.mean(accuracies), "seeds": len(accuracies)})
    return model, out


def spearman_interval(x: list[float], y: list[float], resamples: int, seed: int = 0) -> dict:
    """Spearman's rho of ``x`` and ``y`` and its 95% percentile bootstrap interval over the points;
    all None when either is constant (no rank order to correlate)."""
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = {"rho": None, "low": None, "high": None, "points": len(x_arr)}
    if len(x_arr) < 3 or np.ptp(x_arr) == 0 or np.ptp(y_arr) == 0:
        return out
    rng, draws = np.random.default_rng(seed), []
    for _ in range(resamples):
        idx = rng.integers(len(x_arr), size=len(x_arr))
        if np.ptp(x_arr[idx]) > 0 and np.ptp(y_arr[idx]) > 0:  # a resample of tied points has no rank order
            draws.append(spearmanr(x_arr[idx], y_arr[idx]).statistic)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {**out, "rho": float(spearmanr(x_arr, y_arr).statistic), "low": float(low), "high": float(high)}


def _by_class(texts: list[str], labels: list[int], classes: int) -> dict[int, list[str]]:
    return {c: [t for t, y in zip(texts, labels) if y == c] for c in range(classes)}


def set_distances(theta: Prepared, texts: list[str], labels: list[int]) -> dict[str, float]:
    """Every definition's distance of one training set (see the module docstring)."""
    classes = _by_class(texts, labels, theta.task.num_labels)
    out: dict[str, float] = {}
    checkpoints = len(theta.parts[0])
    own: list[float] = []  # per class, at theta0: the contrastive distance reads them again
    for k in range(checkpoints):
        values = []
        for c, mine in classes.items():
            checkpoint, objective = theta.parts[c][k]
            with checkpoint.active():
                values.append(texts_distance(theta, objective, mine))
        own = own or values
        out["theta0" if k == 0 else f"trajectory_{k}"] = statistics.mean(values)
    if checkpoints > 1:
        out["trajectory_mean"] = statistics.mean(out[n] for n in out)
    others = [
        statistics.mean(texts_distance(theta, theta.parts[o][0][1], mine) for o in classes if o != c)
        for c, mine in classes.items()
    ]
    out["contrastive"] = statistics.mean(a - b for a, b in zip(own, others))
    model, tok, task = theta.model, theta.tokenizer, theta.task
    out["nll"] = mean_text_nll(model, tok, texts)
    out["label_margin"] = float(label_margins(model, tok, task, texts, labels, batch_size=32).mean())
    return out


def block_distance(block: Prepared, texts: list[str], labels: list[int]) -> float:
    """``last_block``: the mean over classes of the texts' distance under ``block``'s matched layer."""
    classes = _by_class(texts, labels, block.task.num_labels)
    return statistics.mean(texts_distance(block, block.parts[c][0][1], mine) for c, mine in classes.items())


def run_study(args: StudyArguments, loaded: tuple | None = None) -> dict:
    """Distances of every evaluated training set and their correlations with accuracy; writes
    ``args.output`` (+ .md) and returns the results."""
    if not args.synthesis:
        raise ValueError("Give the synthesis whose targets define the distances: --synthesis DIR.")
    paths = [Path(p.strip()) for p in args.results.split(",") if p.strip()]
    model_name, sets = training_sets(paths, args.model)
    _, config, metrics = read_synthesis_dir(args.synthesis)
    data, task = load_task(config.to_task())
    model, tok = loaded or load_model_and_tokenizer(metrics.get("generator") or model_name, device=device())
    output = Path(args.output)
    source = data[config.real_split]
    plain = replace(config, dp_epsilon=0.0, calibrate=False)  # the study measures the real, un-noised targets
    checkpoints = f"theta0,trajectory:{args.trajectory}" if args.trajectory else "theta0"
    with model_state_kept(model):
        theta = prepare(
            model, tok, task, replace(plain, target_checkpoints=checkpoints), source,
            output.with_name(output.stem + "_trajectory"),
        )  # fmt: skip
        rows = []
        for entry in sets:
            texts, labels = gradmm_texts(entry["file"], task, per_class=10**9)
            rows.append({**entry, **set_distances(theta, texts, labels)})
    if args.last_block:
        last = rf"model\.layers\.{model.config.num_hidden_layers - 1}\."
        block_config = replace(plain, matched_params=last, target_checkpoints="theta0")
        with model_state_kept(model):
            block = prepare(model, tok, task, block_config, source, output.parent)
            for row in rows:
                row["last_block"] = block_distance(block, *gradmm_texts(row["file"], task, per_class=10**9))
    predictors = [k for k in rows[0] if k not in ("name", "method", "file", "accuracy", "seeds")]
    accuracy = [r["accuracy"] for r in rows]
    correlations = {p: spearman_interval([r[p] for r in rows], accuracy, args.resamples) for p in predictors}
    results = {
        "model": model_name,
        "synthesis": str(args.synthesis),
        "distance": config.distance,
        "arguments": asdict(args),
        "correlations": correlations,
        "sets": rows,
    }
    write_json_and_table(results, output, study_table(results))
    return results


def study_table(results: dict) -> str:
    """The correlations, then every set's accuracy and distances."""
    lines = [
        f"Spearman's rho of each predictor with test accuracy ({results['model']}), over "
        f"{len(results['sets'])} training sets; 95% bootstrap interval over the sets. Distances that "
        "predict training value are negative.",
        "",
        "| predictor | rho | 95% interval |",
        "| --- | --- | --- |",
    ]
    for name, c in results["correlations"].items():
        if c["rho"] is None:
            lines.append(f"| {name} | undefined (a constant column) | - |")
        else:
            lines.append(f"| {name} | {c['rho']:+.2f} | [{c['low']:+.2f}, {c['high']:+.2f}] |")
    names = list(results["correlations"])
    lines += ["", "| set | accuracy | " + " | ".join(names) + " |", "|" + " --- |" * (2 + len(names))]
    for row in sorted(results["sets"], key=lambda r: -r["accuracy"]):
        cells = " | ".join(f"{row[n]:.4f}" for n in names)
        lines.append(f"| {row['name']} | {row['accuracy']:.3f} ({row['seeds']} seeds) | {cells} |")
    return "\n".join(lines) + "\n"
