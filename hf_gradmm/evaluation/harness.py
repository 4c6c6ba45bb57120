"""``hf-gradmm evaluate``: does the synthetic data train models, against the usual substitutes?

For every target model, method and seed: build the method's training set at the budget (N
examples per class), fine-tune with the shared recipe (checkpoint chosen on a real dev
split), then score the real test split once. Prompt-only methods (zero-shot, few-shot) train
nothing and are scored on the same test split. The table holds mean and std of test
accuracy per method and model, and the mean NLL of each method's training texts under the
generator beside that of real test texts.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.distributed import device
from hf_gradmm.evaluation import baselines
from hf_gradmm.finetune import FinetuneConfig, finetune
from hf_gradmm.lm import label_word_logprobs, mean_text_nll, text_ids
from hf_gradmm.models import load_model_and_tokenizer
from hf_gradmm.rundir import read_synthesis_dir
from hf_gradmm.targets.pool import real_pool
from hf_gradmm.tasks import TaskSpec, load_task

ALL_METHODS = ("zero_shot", "few_shot", "random", "herding", "kcenter", "llm", "real_pool", "gradmm")


@dataclass
class EvaluateArguments:
    """What ``hf-gradmm evaluate`` compares (task flags and the fine-tuning recipe come beside it)."""

    synthetic: str | None = field(
        default=None,
        metadata={
            "help": "GRADMM synthesis output(s): DIR, or name=DIR pairs separated by commas (e.g. "
            "'gradmm=out/rt,gradmm_centering=out/rt_c'); each is a method row."
        },
    )
    models: str = field(default="smollm2-135m", metadata={"help": "Target models, comma-separated (names or ids)."})
    generator: str | None = field(
        default=None,
        metadata={
            "help": "Model for coreset embeddings, LLM-generated texts and NLLs. Default: the synthesis run's "
            "generator, else the first target model."
        },
    )
    methods: str = field(default=",".join(ALL_METHODS), metadata={"help": f"Comma-separated, from {ALL_METHODS}."})
    budget: int = field(default=10, metadata={"help": "Training examples per class for every method."})
    seeds: int = field(default=3, metadata={"help": "Seeds per method and model (data draw and fine-tuning)."})
    pool_size: int = field(default=200, metadata={"help": "Real examples per class the coresets choose from."})
    llm_length: int = field(default=0, metadata={"help": "Tokens per LLM-generated text; 0: the synthesis's length."})
    output: str = field(default="results.json", metadata={"help": "Results JSON; .md table and .png figure beside."})


def split_sample(dataset, n: int, seed: int) -> tuple[list[str], list[int]]:
    """A seeded sample of ``n`` examples (all when ``n`` is 0) as (texts, labels), in dataset order:
    the real dev and test splits of the harness, the audit and TransferCallback."""
    idx = list(range(len(dataset)))
    if n and n < len(idx):
        idx = sorted(random.Random(seed).sample(idx, n))
    return [dataset[i]["text"] for i in idx], [dataset[i]["label"] for i in idx]


def test_accuracy(model, tokenizer, task: TaskSpec, test: tuple[list[str], list[int]], demonstrations=()) -> float:
    """The one read of the test split per run."""
    preds = label_word_logprobs(model, tokenizer, task, test[0], demonstrations, batch_size=32).argmax(-1).tolist()
    return sum(int(p == y) for p, y in zip(preds, test[1])) / len(test[1])


def synthetic_dirs(spec: str | None) -> dict[str, Path]:
    """``--synthetic``: ``DIR`` or ``name=DIR`` pairs separated by commas -> {name: folder}."""
    out = {}
    for i, part in enumerate(p.strip() for p in (spec or "").split(",") if p.strip()):
        name, _, path = part.rpartition("=")
        out[name or ("gradmm" if i == 0 else f"gradmm_{i}")] = Path(path)
    return out


@dataclass
class _TrainingSets:
    """Builds each method's training set at the budget (seeded per run)."""

    data: Any
    task: TaskSpec
    args: EvaluateArguments
    generator: tuple  # (model, tokenizer) of the generator: coresets' embeddings, LLM texts, NLLs
    synth_config: GradMatchConfig
    synthetic: dict[str, Path]
    length: int  # tokens per LLM-generated text

    def __call__(self, method: str, seed: int) -> tuple[list[str], list[int]]:
        data, task, budget = self.data, self.task, self.args.budget
        model, tok = self.generator
        if method == "random" or method == "few_shot":
            return baselines.random_real(data["train"], task, budget, seed)
        if method in ("herding", "kcenter"):
            return baselines.coreset(method, model, tok, data["train"], task, budget, seed, self.args.pool_size)
        if method == "llm":
            prefix = self.synth_config.projection_prefix or None  # None: the default class-naming prefix
            return baselines.llm_generated(model, tok, task, budget, seed, self.length, prefix)
        if method == "real_pool":
            config = self.synth_config
            pool = real_pool(data["train"], task, config.target_examples, 0, config.seed)
            return [t for c in pool for t in pool[c]["target"]], [c for c in pool for _ in pool[c]["target"]]
        if method in self.synthetic:
            return baselines.gradmm_texts(self.synthetic[method], task, budget)
        return [], []  # zero_shot


def _method_rows(args: EvaluateArguments) -> tuple[list[str], dict[str, Path]]:
    """The table's rows (methods, one per synthesis folder for 'gradmm'), refusing unknown ones."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {ALL_METHODS}.")
    synthetic = synthetic_dirs(args.synthetic)
    if "gradmm" in methods and not synthetic:
        raise ValueError("Method 'gradmm' needs --synthetic DIR (a synthesize output folder).")
    for path in synthetic.values():
        if not path.exists():
            raise ValueError(f"Synthetic folder {path} does not exist.")
    return [m for m in methods if m != "gradmm"] + (list(synthetic) if "gradmm" in methods else []), synthetic


def _one_run(model, tok, task, method: str, seed: int, training: tuple, dev, test, recipe) -> dict:
    """Train (or prompt) with one method's set and read the test split once."""
    run = {"method": method, "seed": seed}
    if method == "zero_shot":
        run["test_accuracy"] = test_accuracy(model, tok, task, test)
    elif method == "few_shot":
        demos = list(zip(*training))
        random.Random(seed).shuffle(demos)
        run.update(examples=len(training[0]), test_accuracy=test_accuracy(model, tok, task, test, demos))
    else:
        tuned, history, best_step = finetune(model, tok, task, *training, dev, recipe, seed)
        run.update(examples=len(training[0]), dev_history=history, best_step=best_step)
        run["test_accuracy"] = test_accuracy(tuned, tok, task, test)
    return run


def run_evaluation(task: TaskSpec, args: EvaluateArguments, recipe: FinetuneConfig, models: dict | None = None) -> dict:
    """Run every (model, method, seed); returns the results dict (also written to ``args.output``).

    ``models`` maps names to already loaded ``(model, tokenizer)`` pairs (the rest are loaded).
    """
    data, task = load_task(task)
    rows, synthetic = _method_rows(args)
    loaded = dict(models or {})

    def get(name):
        if name not in loaded:
            loaded[name] = load_model_and_tokenizer(name, device=device())
        return loaded[name]

    first_dir = next(iter(synthetic.values()), None)
    synth_config, synth_metrics = GradMatchConfig(), {}
    if first_dir is not None:
        _, synth_config, synth_metrics = read_synthesis_dir(first_dir)
    model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    generator_name = args.generator or synth_metrics.get("generator") or model_names[0]
    gen_model, gen_tok = get(generator_name)
    dev = split_sample(data["validation"], recipe.dev_examples, seed=0)
    test = split_sample(data["test"], recipe.test_examples, seed=1)
    lengths = [len(text_ids(gen_tok, t)) for t in data["train"]["text"][:500]]
    length = args.llm_length or max(2, round(statistics.mean(lengths)))
    training_set = _TrainingSets(data, task, args, (gen_model, gen_tok), synth_config, synthetic, length)
    sets = {(m, s): training_set(m, s) for m in rows for s in range(args.seeds) if m != "zero_shot"}
    runs = []
    per_model = sum(1 if m == "zero_shot" else args.seeds for m in rows)
    bar = tqdm(total=len(model_names) * per_model, desc="evaluate", unit="run")
    for model_name in model_names:
        model, tok = get(model_name)
        for method in rows:
            for seed in range(1 if method == "zero_shot" else args.seeds):  # zero-shot is deterministic
                bar.set_postfix(model=model_name, method=method, seed=seed, refresh=False)
                start = time.perf_counter()
                run = _one_run(model, tok, task, method, seed, sets.get((method, seed)), dev, test, recipe)
                runs.append({"model": model_name, **run, "seconds": time.perf_counter() - start})
                bar.update(1)
    bar.close()
    nll = {m: mean_text_nll(gen_model, gen_tok, sets[(m, 0)][0]) for m in rows if (m, 0) in sets}
    nll["real test texts"] = mean_text_nll(gen_model, gen_tok, test[0][:200])
    results = {
        "task": task.name,
        "num_labels": task.num_labels,
        "generator": generator_name,
        "budget_per_class": args.budget,
        "seeds": args.seeds,
        "dev_examples": len(dev[0]),
        "test_examples": len(test[0]),
        "recipe": asdict(recipe),
        "arguments": asdict(args),
        "training_nll_under_generator": nll,
        "summary": summarise(runs),
        "runs": runs,
    }
    write_outputs(results, Path(args.output))
    return results


def summarise(runs: list[dict]) -> dict:
    """Mean, std (sample; 0 for one run) and count of test accuracy per method and model."""
    out: dict[str, dict] = {}
    for run in runs:
        out.setdefault(run["method"], {}).setdefault(run["model"], []).append(run["test_accuracy"])
    return {
        method: {
            model: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
            for model, v in per_model.items()
        }
        for method, per_model in out.items()
    }


def markdown_table(results: dict) -> str:
    models = sorted({run["model"] for run in results["runs"]}, key=[r["model"] for r in results["runs"]].index)
    examples = {}
    for run in results["runs"]:
        examples.setdefault(run["method"], run.get("examples", 0))
    head = f"| method | examples | NLL under {results['generator']} | " + " | ".join(models) + " |"
    lines = [head, "|" + " --- |" * (3 + len(models))]
    for method, per_model in results["summary"].items():
        cells = [f"{per_model[m]['mean']:.3f} ± {per_model[m]['std']:.3f} (n={per_model[m]['n']})" for m in models]
        nll = results["training_nll_under_generator"].get(method)
        lines.append(
            f"| {method} | {examples[method] or '-'} | {f'{nll:.2f}' if nll is not None else '-'} | "
            + " | ".join(cells)
            + " |"
        )
    real = results["training_nll_under_generator"].get("real test texts")
    return "\n".join(lines) + f"\n\nNLL of real test texts under the generator: {real:.2f}.\n"


def write_outputs(results: dict, output: Path) -> None:
    """results.json, the Markdown table (.md) and a bar chart (.png) of accuracy per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    output.with_suffix(".md").write_text(markdown_table(results))
    summary = results["summary"]
    methods = list(summary)
    models = list(dict.fromkeys(run["model"] for run in results["runs"]))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(methods)), 4))
    for k, model in enumerate(models):
        xs = [i + k * width for i in range(len(methods))]
        means = [summary[m][model]["mean"] if model in summary[m] else 0 for m in methods]
        stds = [summary[m][model]["std"] if model in summary[m] else 0 for m in methods]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(methods))], methods, rotation=30)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{results['task']}: {results['budget_per_class']} examples per class, {results['seeds']} seeds")
    ax.axhline(1 / results["num_labels"], color="grey", lw=0.5, ls="--")  # chance
    ax.legend()
    fig.tight_layout()
    fig.savefig(output.with_suffix(".png"), dpi=120)
    plt.close(fig)
