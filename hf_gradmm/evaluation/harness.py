"""``hf-gradmm evaluate``: does the synthetic data train models, against the usual substitutes?

For every target model and method: build the method's training sets at the budget (N examples
per class; ``draws`` seeded sets of a sampled method, one per synthesis for GRADMM), fine-tune
each with every fine-tuning seed using the shared recipe (checkpoint chosen on a real dev split),
then score the real test split once per run. Prompt-only methods (zero-shot, few-shot) train
nothing and are scored on the same test split. Every run keeps which test examples it got right,
so each method can be compared with a reference method pair by pair (paired.py). Every training
set is saved beside the results, so any run can be inspected and rerun.
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

from hf_gradmm.arguments import check_number, report_targets
from hf_gradmm.classifier import classifier_correct, finetune_classifier
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.distributed import device
from hf_gradmm.evaluation import baselines
from hf_gradmm.evaluation.paired import correct_array, paired_difference
from hf_gradmm.evaluation.readability import label_filter_keep, repetition, sample_texts
from hf_gradmm.evaluation.report import write_outputs
from hf_gradmm.finetune import FinetuneConfig, finetune
from hf_gradmm.lm import label_word_logprobs, mean_text_nll, text_ids
from hf_gradmm.models import check_model_name, load_model_and_tokenizer
from hf_gradmm.rundir import read_synthesis_dir
from hf_gradmm.targets.pool import real_pool
from hf_gradmm.tasks import TaskSpec, load_task
from hf_gradmm.tasks.registry import split_pair

# Methods whose training texts are the task's real examples: results never quote them.
REAL_DATA_METHODS = ("random", "few_shot", "herding", "kcenter", "real_pool")
# Methods whose set k is a seeded draw (seed k): a merge refuses the same draw from two files.
SAMPLED_METHODS = ("random", "few_shot", "herding", "kcenter", "llm")
ALL_METHODS = ("zero_shot", "few_shot", "random", "herding", "kcenter", "llm", "real_pool", "gradmm")


@dataclass
class EvaluateArguments:
    """What ``hf-gradmm evaluate`` compares (task flags and the fine-tuning recipe come beside it)."""

    synthetic: str | None = field(
        default=None,
        metadata={
            "help": "GRADMM syntheses, each a method row: DIR, or name=DIR pairs separated by commas (e.g. "
            "'gradmm=out/rt,gradmm_centering=out/rt_c'). Several syntheses of one method are joined with '+' "
            "('gradmm=out/s42+out/s7+out/s1'): each is one training set, fine-tuned with every seed. A DIR may "
            "also be a training-set file saved by an earlier evaluation (.jsonl), to rerun that row."
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
    draws: int = field(
        default=3,
        metadata={
            "help": "Training sets per sampled method (random, few_shot, herding, kcenter, llm), set k drawn "
            "with seed k: the counterpart of several syntheses. real_pool has one set."
        },
    )
    first_draw: int = field(
        default=0,
        metadata={
            "help": "Seed of the first drawn set: with --draws 3, 3 draws sets 3-5. Adds sets to a row evaluated "
            "earlier (draws 0-2) without repeating them; join the two results files with --merge."
        },
    )
    seeds: int = field(
        default=3, metadata={"help": "Fine-tuning seeds per training set (seed s is the same for every method)."}
    )
    reference: str = field(
        default="random,llm",
        metadata={
            "help": "Methods every other method is compared with, pair by pair (same test examples, same "
            "fine-tuning seeds): mean difference and its bootstrap interval (level 0.95). Those not run are skipped."
        },
    )
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples of each paired interval."})
    judge: str | None = field(
        default=None,
        metadata={
            "help": "A second model (name or id) under which each method's texts get an NLL beside the generator's: "
            "one that did not write them (e.g. gemma3-270m for SmolLM2 texts). With --merge, every method's "
            "readability is measured again from its saved training sets. Default: none."
        },
    )
    pool_size: int = field(default=200, metadata={"help": "Real examples per class the coresets choose from."})
    llm_length: int = field(default=0, metadata={"help": "Tokens per LLM-generated text; 0: the synthesis's length."})
    merge: str | None = field(
        default=None,
        metadata={
            "help": "Combine earlier results files (comma-separated; the same task, recipe and test split) into one "
            "table with paired intervals, instead of running anything: an evaluation run in pieces."
        },
    )
    rename: str | None = field(
        default=None,
        metadata={
            "help": "With --merge: OLD=NEW pairs, comma-separated; the runs of method OLD count as method NEW, e.g. "
            "one configuration's syntheses on several real pools, each evaluated under its own name, pooled into "
            "one row (joint_pool44=joint,joint_pool45=joint). The merged file records the renames. Default: none."
        },
    )
    output: str = field(
        default="results.json",
        metadata={"help": "Results JSON; .md table and .png figure beside, training sets in <stem>_training/."},
    )
    report_to: str = field(
        default="none",
        metadata={
            "help": "Where each fine-tuning run logs (its loss every step, its dev accuracy): any of "
            "TrainingArguments.report_to's integrations, comma-separated ('tensorboard', 'wandb', 'mlflow', "
            "'trackio', 'all', 'none'), through the Trainer's own callbacks; each run's folder is "
            "<stem>_runs/<model>/<method>/set<k>_seed<s> (TensorBoard: its runs/ subfolder)."
        },
    )

    def __post_init__(self) -> None:
        report_targets(self.report_to, ours=())  # an unknown name or a missing package: refused now
        for name in ("budget", "draws", "seeds", "bootstrap", "pool_size"):
            check_number(self, name, 1)
        check_number(self, "llm_length", 0, note="0 = the synthesis's length")
        check_number(self, "first_draw", 0)


def split_sample(dataset, n: int, seed: int) -> tuple[list[str], list[int]]:
    """A seeded sample of ``n`` examples (all when ``n`` is 0) as (texts, labels), in dataset order:
    the real dev and test splits of the harness, the audit and TransferCallback."""
    idx = list(range(len(dataset)))
    if n and n < len(idx):
        idx = sorted(random.Random(seed).sample(idx, n))
    return [dataset[i]["text"] for i in idx], [dataset[i]["label"] for i in idx]


def test_correct(model, tokenizer, task: TaskSpec, test: tuple[list[str], list[int]], demonstrations=()) -> list[int]:
    """The one read of the test split per run: 1 for each test example the model gets right."""
    preds = label_word_logprobs(model, tokenizer, task, test[0], demonstrations, batch_size=32).argmax(-1).tolist()
    return [int(p == y) for p, y in zip(preds, test[1])]


def test_accuracy(model, tokenizer, task: TaskSpec, test: tuple[list[str], list[int]], demonstrations=()) -> float:
    """Accuracy on the test split (one read)."""
    correct = test_correct(model, tokenizer, task, test, demonstrations)
    return sum(correct) / len(correct)


def synthetic_dirs(spec: str | None) -> dict[str, list[Path]]:
    """``--synthetic``: ``DIR`` or ``name=DIR`` pairs separated by commas, several syntheses of one
    method joined with '+' -> {name: [folder, ...]}."""
    out = {}
    for i, part in enumerate(p.strip() for p in (spec or "").split(",") if p.strip()):
        name, _, paths = part.rpartition("=")
        out[name or ("gradmm" if i == 0 else f"gradmm_{i}")] = [Path(p.strip()) for p in paths.split("+") if p.strip()]
    return out


@dataclass
class _TrainingSets:
    """Builds each method's training set ``k`` at the budget."""

    data: Any
    task: TaskSpec
    args: EvaluateArguments
    generator: tuple  # (model, tokenizer) of the generator: coresets' embeddings, LLM texts, NLLs
    synth_config: GradMatchConfig
    synthetic: dict[str, list[Path]]
    length: int | tuple[int, int]  # tokens per LLM-generated text (a pair: per segment)

    def keys(self, method: str) -> range:
        """The method's training sets: a sampled method's draw seeds (from ``first_draw``), a GRADMM
        row's synthesis indices, real_pool's one set, none for zero-shot."""
        if method == "zero_shot":
            return range(0)
        if method == "real_pool":
            return range(1)
        if method in self.synthetic:
            return range(len(self.synthetic[method]))
        return range(self.args.first_draw, self.args.first_draw + self.args.draws)

    def __call__(self, method: str, k: int) -> tuple[list[str], list[int]]:
        """Set ``k`` of the method (``k``: the draw seed of a sampled method, see :meth:`keys`)."""
        data, task, budget = self.data, self.task, self.args.budget
        model, tok = self.generator
        if method == "random" or method == "few_shot":
            return baselines.random_real(data["train"], task, budget, k)
        if method in ("herding", "kcenter"):
            return baselines.coreset(method, model, tok, data["train"], task, budget, k, self.args.pool_size)
        if method == "llm":
            prefix = self.synth_config.projection_prefix or None  # None: the default class-naming prefix
            return baselines.llm_generated(model, tok, task, budget, k, self.length, prefix)
        if method == "real_pool":
            config = self.synth_config
            pool = real_pool(data["train"], task, config.target_examples, 0, config.seed)
            return [t for c in pool for t in pool[c]["target"]], [c for c in pool for _ in pool[c]["target"]]
        return baselines.gradmm_texts(self.synthetic[method][k], task, budget)


def _method_rows(args: EvaluateArguments) -> tuple[list[str], dict[str, list[Path]]]:
    """The table's rows (methods, one per synthesis folder for 'gradmm'), refusing unknown ones."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {ALL_METHODS}.")
    synthetic = synthetic_dirs(args.synthetic)
    if "gradmm" in methods and not synthetic:
        raise ValueError("Method 'gradmm' needs --synthetic DIR (a synthesize output folder).")
    for name, paths in synthetic.items():
        if not paths:
            raise ValueError(f"--synthetic {name}= names no folder; give {name}=DIR (or DIR1+DIR2+...).")
        for path in paths:
            if not path.exists():
                raise ValueError(f"Synthetic folder {path} (method {name!r}) does not exist.")
    return [m for m in methods if m != "gradmm"] + (list(synthetic) if "gradmm" in methods else []), synthetic


def _one_run(
    model, tok, task, method: str, seed: int, training: tuple | None, dev, test, recipe, report: tuple = ([], None)
) -> dict:
    """Train (or prompt) with one method's set and read the test split once; ``report``: the
    fine-tuning's (report_to integrations, run folder)."""
    run: dict[str, Any] = {"method": method, "seed": seed}
    if method == "zero_shot":
        correct = test_correct(model, tok, task, test)
    elif method == "few_shot":
        demos = list(zip(*training))
        random.Random(seed).shuffle(demos)
        run["examples"] = len(training[0])
        correct = test_correct(model, tok, task, test, demos)
    else:
        correct, history, best_step = finetuned_correct(model, tok, task, training, dev, test, recipe, seed, report)
        run.update(examples=len(training[0]), dev_history=history, best_step=best_step)
    run["test_accuracy"] = sum(correct) / len(correct)
    run["correct"] = "".join(map(str, correct))  # per test example, for the paired comparison
    return run


def finetuned_correct(model, tok, task, training, dev, test, recipe, seed: int, report: tuple = ([], None)):
    """Fine-tune on ``training`` with the recipe's head (label word or classifier); returns the test
    split's per-example correctness, the dev history and the best step."""
    reporting = dict(report_to=report[0], report_dir=report[1])
    if recipe.head == "classifier":
        clf, history, best = finetune_classifier(
            model, tok, task.num_labels, *training, dev, recipe, seed, pair=task.is_pair, **reporting
        )
        return classifier_correct(clf, tok, *test, pair=task.is_pair), history, best
    tuned, history, best = finetune(model, tok, task, *training, dev, recipe, seed, **reporting)
    return test_correct(tuned, tok, task, test), history, best


def save_training_sets(sets: dict[tuple[str, int], tuple], folder: Path) -> dict[tuple[str, int], str]:
    """Each training set as ``folder/<method>/set<k>.jsonl`` (text, label per line); returns the
    paths relative to the folder's parent (where results.json is)."""
    paths = {}
    for (method, k), (texts, labels) in sets.items():
        path = folder / method / f"set{k}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
        paths[(method, k)] = str(path.relative_to(folder.parent))
    return paths


def _check_request(rows: list[str], recipe: FinetuneConfig, names: list[str | None], loaded: dict) -> None:
    """Refuse, before the data or any model loads, prompting methods under ``--head classifier`` and a
    model that cannot load (an unknown name, a registered one whose weights package is missing)."""
    prompted = [m for m in rows if m in ("zero_shot", "few_shot")]
    if recipe.head == "classifier" and prompted:
        raise ValueError(
            f"--head classifier trains a classification head; {' and '.join(prompted)} prompt the LM and train "
            f"nothing. Leave them out of --methods (e.g. --methods random,llm,gradmm), or use --head label-word."
        )
    for name in names:
        if name and name not in loaded:
            check_model_name(name)


def _mean_length(tokenizer, task: TaskSpec, texts: list[str]) -> int | tuple[int, int]:
    """The real texts' mean token length (a pair task: each segment's), the LLM baseline's length."""

    def mean(part) -> int:
        return max(2, round(statistics.mean(len(text_ids(tokenizer, t)) for t in part)))

    if task.is_pair:
        first, second = zip(*(split_pair(t) for t in texts))
        return mean(first), mean(second)
    return mean(texts)


def run_evaluation(task: TaskSpec, args: EvaluateArguments, recipe: FinetuneConfig, models: dict | None = None) -> dict:
    """Run every (model, method, training set, seed); returns the results dict (also written to
    ``args.output``, with the training sets in ``<stem>_training/``).

    ``models`` maps names to already loaded ``(model, tokenizer)`` pairs (the rest are loaded).
    """
    if args.rename and not args.merge:
        raise ValueError("--rename renames methods of the files a --merge joins: add --merge A.json,B.json or drop it.")
    if args.merge:
        return merge_results([Path(p.strip()) for p in args.merge.split(",") if p.strip()], args, task, models)
    rows, synthetic = _method_rows(args)
    model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    _check_request(rows, recipe, [*model_names, args.generator, args.judge], models or {})
    data, task = load_task(task)
    loaded = dict(models or {})

    def get(name):
        if name not in loaded:
            loaded[name] = load_model_and_tokenizer(name, device=device())
        return loaded[name]

    first_dir = next((p for paths in synthetic.values() for p in paths if p.is_dir()), None)
    synth_config, synth_metrics = GradMatchConfig(), {}
    if first_dir is not None:
        _, synth_config, synth_metrics = read_synthesis_dir(first_dir)
    generator_name = args.generator or synth_metrics.get("generator") or model_names[0]
    gen_model, gen_tok = get(generator_name)
    dev = split_sample(data["validation"], recipe.dev_examples, seed=0)
    test = split_sample(data["test"], recipe.test_examples, seed=1)
    length = args.llm_length or _mean_length(gen_tok, task, data["train"]["text"][:500])
    training_set = _TrainingSets(data, task, args, (gen_model, gen_tok), synth_config, synthetic, length)
    sets = {(m, k): training_set(m, k) for m in rows for k in training_set.keys(m)}
    output = Path(args.output)
    files = save_training_sets(sets, output.with_name(output.stem + "_training"))
    plan = [(m, k, s) for m in rows for k in training_set.keys(m) for s in range(args.seeds)]
    plan += [("zero_shot", 0, 0)] * ("zero_shot" in rows)  # deterministic: once
    plan.sort(key=lambda run: rows.index(run[0]))
    runs, integrations = [], report_targets(args.report_to, ours=())
    bar = tqdm(total=len(model_names) * len(plan), desc="evaluate", unit="run")
    for model_name in model_names:
        model, tok = get(model_name)
        for method, k, seed in plan:
            bar.set_postfix(model=model_name, method=method, set=k, seed=seed, refresh=False)
            start = time.perf_counter()
            folder = output.with_name(output.stem + "_runs") / Path(model_name).name / method / f"set{k}_seed{seed}"
            report = (integrations, str(folder) if integrations else None)
            run = _one_run(model, tok, task, method, seed, sets.get((method, k)), dev, test, recipe, report)
            run.update(set=k, training_file=files.get((method, k)), seconds=time.perf_counter() - start)
            if method in SAMPLED_METHODS:
                run["draw"] = k
            runs.append({"model": model_name, **run})
            bar.update(1)
    bar.close()
    generator = (generator_name, gen_model, gen_tok)
    readability = _readability(rows, sets, test, task, generator, args.judge and get(args.judge))
    results = {
        "task": task.name,
        "num_labels": task.num_labels,
        "label_names": list(task.label_names),
        "generator": generator_name,
        "judge": args.judge,
        "budget_per_class": args.budget,
        "draws": args.draws,
        "first_draw": args.first_draw,
        "seeds": args.seeds,
        "dev_examples": len(dev[0]),
        "test_examples": len(test[0]),
        "recipe": asdict(recipe),
        "arguments": asdict(args),
        "training_nll_under_generator": {m: r["nll_generator"] for m, r in readability.items()},
        "readability": readability,
        "summary": summarise(runs),
        "paired": compare(runs, args.reference, args.bootstrap),
        "runs": runs,
    }
    write_outputs(results, output)
    return results


def _readability(
    rows: list[str], sets: dict, test: tuple, task: TaskSpec, generator: tuple, judge: tuple | None
) -> dict:
    """Per method (and for real test texts): NLL under the generator (and the judge), repetition,
    distinct-2, the label filter's keep share, and ten of its texts (not for real-data methods: a
    results file quotes no real text)."""
    name, gen_model, gen_tok = generator
    texts = {m: [t for (method, _), (ts, _) in sets.items() if method == m for t in ts] for m in rows}
    labels = {m: [y for (method, _), (_, ys) in sets.items() if method == m for y in ys] for m in rows}
    texts["real test texts"], labels["real test texts"] = test[0][:200], test[1][:200]
    out = {}
    for m, mine in texts.items():
        if not mine:
            continue
        entry = {"nll_generator": mean_text_nll(gen_model, gen_tok, mine), **repetition(mine)}
        entry["label_filter_keep"] = label_filter_keep(gen_model, gen_tok, task, mine, labels[m])
        if judge:
            entry["nll_judge"] = mean_text_nll(judge[0], judge[1], mine)
        if m not in REAL_DATA_METHODS and m != "real test texts":  # the task's own texts are not repeated
            entry["examples"] = sample_texts(mine, labels[m])
        out[m] = entry
    return out


def read_results(paths: list[Path]) -> list[dict]:
    """Results files of ``hf-gradmm evaluate``, refusing a missing one or a mix of tasks, recipes or
    test splits (their runs could not be compared pair by pair)."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"Results file(s) {missing} not found: run 'hf-gradmm evaluate --output FILE' first.")
    out, key = [], None
    for path in paths:
        results = json.loads(path.read_text())
        recipe = {"head": "label-word", **results["recipe"]}  # files from before --head trained label words
        mine = (json.dumps(recipe, sort_keys=True), results["test_examples"], results["task"])
        if key not in (None, mine):
            raise ValueError(f"{path} was evaluated with another recipe, test split or task than {paths[0]}.")
        key = mine
        for run in results["runs"]:  # training files are relative to their own results file
            if run.get("training_file"):
                run["training_file"] = str((path.parent / run["training_file"]).resolve())
        out.append(results)
    return out


def merge_results(
    paths: list[Path], args: EvaluateArguments, task: TaskSpec | None = None, models: dict | None = None
) -> dict:
    """``--merge``: one results file (table, paired intervals) from the runs of several. With
    ``--judge`` the readability of every method is measured again from its saved training sets,
    under the results' generator and the judge (``task``: the results' task, to read them;
    ``models``: already loaded ``(model, tokenizer)`` pairs by name, as for :func:`run_evaluation`)."""
    renames = parse_renames(args.rename)
    parts = rename_methods(read_results(paths), renames)
    runs = [run for part in parts for run in part["runs"]]
    seen, sets, draws = {}, {}, {}
    for n, part in enumerate(parts):  # a set is its training file: sets of one method from two files get new numbers
        for run in part["runs"]:
            _check_new_draw(run, part, paths[n], draws)
            where = run.get("training_file") or (n, run.get("set", 0))
            numbers = sets.setdefault((run["model"], run["method"]), {})
            run["set"] = numbers.setdefault(where, len(numbers))
            key = (run["model"], run["method"], where, run["seed"])
            if key in seen:
                raise ValueError(
                    f"Method {run['method']!r} (training set {where}, seed {run['seed']}) is in more than one file: "
                    "the same run twice; merge each run once."
                )
            seen[key] = run
    # a method in several files (the real test texts, or one row pooled by --rename) keeps the first
    # file's figures in both tables, so its NLL and its readability describe the same texts
    readability = _first_file_wins(parts, "readability")
    nll = _first_file_wins(parts, "training_nll_under_generator")
    if args.judge:
        readability = _remeasured_readability(parts[0], runs, task, args.judge, models or {})
        nll.update({m: r["nll_generator"] for m, r in readability.items()})
    results = {
        **{k: v for k, v in parts[0].items() if k not in ("runs", "summary", "paired", "readability")},
        "merged_from": [str(p) for p in paths],
        **({"renamed": renames} if renames else {}),
        "judge": args.judge or parts[0].get("judge"),
        "training_nll_under_generator": nll,
        "readability": readability,
        "summary": summarise(runs),
        "paired": compare(runs, args.reference, args.bootstrap),
        "runs": runs,
    }
    write_outputs(results, Path(args.output))
    return results


def parse_renames(text: str | None) -> dict[str, str]:
    """``--rename OLD=NEW,...`` as {OLD: NEW}, refusing a malformed pair or one OLD named twice."""
    renames: dict[str, str] = {}
    for item in (i.strip() for i in (text or "").split(",") if i.strip()):
        old, sep, new = (x.strip() for x in item.partition("="))
        if not (sep and old and new):
            raise ValueError(
                f"--rename {item!r} is not OLD=NEW: give a method's name in the merged files, '=', and the "
                "row to count its runs in (e.g. joint_pool45=joint)."
            )
        if old in renames:
            raise ValueError(f"--rename names {old!r} twice ({renames[old]!r}, {new!r}): keep one.")
        renames[old] = new
    return renames


def rename_methods(parts: list[dict], renames: dict[str, str]) -> list[dict]:
    """Each results file with its methods renamed (runs, readability, NLL tables), refusing a name no
    file has: a misspelt one would silently leave two rows where one was asked for."""
    if not renames:
        return parts
    found = {run["method"] for part in parts for run in part["runs"]}
    unknown = sorted(set(renames) - found)
    if unknown:
        raise ValueError(f"--rename names method(s) {unknown} that no merged file has; they have {sorted(found)}.")
    for part in parts:
        first_run: dict[str, int] = {}
        for n, run in enumerate(part["runs"]):
            first_run.setdefault(run["method"], n)
            run["method"] = renames.get(run["method"], run["method"])
        # two names made one keep the figures of the name whose runs come first, in both tables
        # (the tables' own key orders can differ, so they do not decide)
        for key in ("readability", "training_nll_under_generator"):
            items = (part.get(key) or {}).items()
            table: dict = {}
            for method, figures in sorted(items, key=lambda item, at=first_run: at.get(item[0], len(at))):
                table.setdefault(renames.get(method, method), figures)
            part[key] = table
    return parts


def _first_file_wins(parts: list[dict], key: str) -> dict:
    """``key``'s table (method -> figures) over several results files, each method's figures from the
    first file that has it."""
    table: dict = {}
    for part in parts:
        for method, figures in (part.get(key) or {}).items():
            table.setdefault(method, figures)
    return table


def _check_new_draw(run: dict, part: dict, path: Path, draws: dict) -> None:
    """Refuse a sampled method's draw that an earlier file of the merge already has: the same seeded
    set twice would count as two sets and narrow the interval. Keeps the draw on the run (a file
    made before ``first_draw`` numbered its sets by draw, unless it was itself a merge)."""
    if run["method"] not in SAMPLED_METHODS:
        return
    draw = run.get("draw", None if part.get("merged_from") else run.get("set", 0))
    if draw is None:
        return
    run["draw"] = draw
    key = (run["model"], run["method"], part.get("generator"), part.get("budget_per_class"), draw, run["seed"])
    if draws.setdefault(key, path) != path:
        raise ValueError(
            f"Draw {draw} of {run['method']!r} (seed {run['seed']}) is in {draws[key]} and in {path}: the same "
            f"training set twice. To add sets to a row, evaluate the new ones with --first-draw (e.g. "
            f"--first-draw 3 after --draws 3), then merge."
        )


def _remeasured_readability(first: dict, runs: list[dict], task: TaskSpec | None, judge: str, models: dict) -> dict:
    """:func:`_readability` of every method's saved training sets (each file once), as a run measures it."""
    if task is None or task.name != first["task"]:
        raise ValueError(f"--merge --judge needs --task {first['task']} (the task of the results merged).")
    data, task = load_task(task)
    methods = list(dict.fromkeys(run["method"] for run in runs if run.get("training_file")))
    files = {(run["method"], run.get("set", 0)): run["training_file"] for run in runs if run.get("training_file")}
    missing = sorted({f for f in files.values() if not Path(f).is_file()})
    if missing:
        raise ValueError(f"--merge --judge reads the saved training sets, and {missing} are gone; rerun those methods.")
    sets = {key: baselines.gradmm_texts(path, task, per_class=10**9) for key, path in files.items()}
    test = split_sample(data["test"], first["recipe"]["test_examples"], seed=1)
    get = {n: models.get(n) or load_model_and_tokenizer(n, device=device()) for n in {first["generator"], judge}}
    return _readability(methods, sets, test, task, (first["generator"], *get[first["generator"]]), get[judge])


def compare(runs: list[dict], reference: str, resamples: int) -> dict:
    """{reference: {method: {model: paired_difference(...)}}} for every reference that was run."""
    by: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        by.setdefault((run["method"], run["model"]), []).append(run)
    out: dict[str, dict] = {}
    for ref in (r.strip() for r in reference.split(",") if r.strip()):
        for (method, model), mine in by.items():
            if method == ref or (ref, model) not in by:
                continue
            pair = paired_difference(correct_array(mine), correct_array(by[(ref, model)]), resamples)
            out.setdefault(ref, {}).setdefault(method, {})[model] = pair
    return out


def summarise(runs: list[dict]) -> dict:
    """Mean, std (sample; 0 for one run), runs, training sets and seeds of test accuracy per method and model."""
    out: dict[str, dict] = {}
    for run in runs:
        out.setdefault(run["method"], {}).setdefault(run["model"], []).append(run)
    summary: dict[str, dict] = {}
    for method, per_model in out.items():
        for model, mine in per_model.items():
            v = [r["test_accuracy"] for r in mine]
            summary.setdefault(method, {})[model] = {
                "mean": statistics.mean(v),
                "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                "n": len(v),
                "sets": len({r.get("set", 0) for r in mine}),
                "seeds": len({r["seed"] for r in mine}),
            }
    return summary
