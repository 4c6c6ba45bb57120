"""``hf-gradmm info`` and ``hf-gradmm preview``: what is installed, and a first look at a task."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from hf_gradmm.lm import predict
from hf_gradmm.models import MODELS, cache_is_complete, cache_root, check_model_name, load_model_and_tokenizer
from hf_gradmm.tasks import TASKS, label_token_ids, load_task
from hf_gradmm.tasks import offline as offline_corpora
from hf_gradmm.version import __version__


@dataclass
class InfoArguments:
    json: bool = field(default=False, metadata={"help": "Print machine-readable JSON."})


@dataclass
class PreviewArguments:
    num_examples: int = field(default=4, metadata={"help": "Real training examples to show per class."})
    split: str = field(default="train", metadata={"help": "Split to show examples from."})


def info(json_output: bool = False) -> dict:
    """Version, registered tasks and models, and whether each is usable offline right now."""
    tasks = [
        {
            "name": spec.name,
            "classes": list(spec.label_names),
            "label_words": list(spec.label_words),
            "template": spec.template,
            "source": spec.default_source,
            "sources": list(spec.sources()),
            "hub_id": spec.hub_id,
            "available_offline": bool(spec.offline) and offline_corpora.is_available(spec.offline),
        }
        for spec in TASKS.values()
    ]
    models = [
        {
            "name": spec.name,
            "description": spec.description,
            "source": f"PyPI package {spec.package}",
            "licence": spec.licence,
            "available": spec.available(),
            "converted": cache_is_complete(cache_root() / spec.name),
            "install": spec.install_hint,
        }
        for spec in MODELS.values()
    ]
    report = {"version": __version__, "cache_dir": str(cache_root()), "tasks": tasks, "models": models}
    if json_output:
        print(json.dumps(report, indent=2))
        return report
    yes = {True: "yes", False: "no"}
    print(f"hf_gradmm {__version__}   model cache: {report['cache_dir']}\n")
    print(f"{'task':<17} {'classes':<44} {'source':<8} offline now")
    for t in tasks:
        classes = ", ".join(t["classes"])[:43]
        print(f"{t['name']:<17} {classes:<44} {t['source']:<8} {yes[t['available_offline']]}")
    print(f"\n{'model':<14} {'available':<10} {'converted':<10} source")
    for m in models:
        flags = f"{yes[m['available']]:<10} {yes[m['converted']]:<10}"
        print(f"{m['name']:<14} {flags} {m['source']} ({m['licence']})")
        if not m["available"]:
            print(f"{'':<14} install: {m['install']}")
    return report


def preview(task_args, model_args, args: PreviewArguments) -> None:
    """Load a task and a model and show real examples with their label words and the model's guess.

    The guess is the label word the model scores highest after the template (zero-shot).
    """
    spec = task_args.to_task()
    check_model_name(model_args.model)  # a misspelt model: refused before the data loads
    start = time.perf_counter()
    data, spec = load_task(spec)
    print(
        f"task {spec.name}: {spec.default_source} data, splits "
        + ", ".join(f"{k}={len(v)}" for k, v in data.items())
        + f" ({time.perf_counter() - start:.1f} s)"
    )
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_args.model)
    print(
        f"model {model_args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
        f"({time.perf_counter() - start:.1f} s)"
    )
    token_ids = label_token_ids(spec, tokenizer)
    words = ", ".join(
        f"{n} -> {spec.label_continuation(i)!r} (token {t})"
        for i, (n, t) in enumerate(zip(spec.label_names, token_ids))
    )
    print(f"template {spec.template!r}; label words: {words}\n")

    if args.split not in data:
        raise ValueError(f"Unknown split {args.split!r}; the task has {list(data)}.")
    split = data[args.split].shuffle(seed=0)
    labels = split["label"]
    picks = [
        i for c in range(spec.num_labels) for i in [j for j, lab in enumerate(labels) if lab == c][: args.num_examples]
    ]
    shown = split.select(picks)
    guesses = predict(model, tokenizer, spec, shown["text"])
    for ex, guess in zip(shown, guesses):
        print(
            f"[{spec.label_names[ex['label']]} -> {spec.label_continuation(ex['label']).strip()!r}; "
            f"model says {spec.label_continuation(guess).strip()!r}] {ex['text'][:150]}"
        )
    hits = sum(ex["label"] == g for ex, g in zip(shown, guesses))
    print(f"\nzero-shot label-word accuracy on these {len(shown)} examples: {hits}/{len(shown)}")
