"""The ``hf-gradmm`` command line.

``hf-gradmm SUBCOMMAND [--config file.yaml] [--flag value ...]``: each subcommand parses its
argument dataclasses with ``trl.TrlParser``, so a YAML file sets any field and flags given on
the command line override it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hf_gradmm import __version__


@dataclass
class InfoArguments:
    json: bool = field(default=False, metadata={"help": "Print machine-readable JSON."})


@dataclass
class PreviewArguments:
    num_examples: int = field(default=4, metadata={"help": "Real training examples to show per class."})
    split: str = field(default="train", metadata={"help": "Split to show examples from."})


def info(json_output: bool = False) -> dict:
    """Version, registered tasks and models, and whether each is usable offline right now."""
    from hf_gradmm.models import MODELS, _cache_is_complete, cache_root
    from hf_gradmm.tasks import TASKS
    from hf_gradmm.tasks import offline as offline_corpora

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
            "converted": _cache_is_complete(cache_root() / spec.name),
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
    from hf_gradmm.classify import predict
    from hf_gradmm.models import load_model_and_tokenizer
    from hf_gradmm.tasks import label_token_ids, load_task

    spec = task_args.to_task()
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


def synthesize(config, model_args) -> None:
    """Run GRADMM and print where the dataset went, a few texts and the calibration figures."""
    import torch

    from hf_gradmm.models import load_model_and_tokenizer
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(
        model_args.model, dtype=torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    )
    synthesizer = GradMatchSynthesizer(model, config, processing_class=tokenizer)
    result = synthesizer.train()
    seconds = time.perf_counter() - start
    if synthesizer.rank != 0:  # several processes: the main one reports
        return
    print(
        f"\n{len(result.texts)} synthetic texts in {result.output_dir} ({seconds:.0f} s); "
        f"load with datasets.load_from_disk({result.output_dir!r})"
    )
    for name in result.label_names:
        shown = [t for t in result.texts if result.label_names[t.label] == name][:3]
        for t in shown:
            print(f"  [{name}] (distance {t.match_distance:.3f}, nll {t.nll:.2f}) {t.text}")
    calibration = result.metrics.get("calibration", {})
    if calibration:
        print("\nmatching distance to the class target (batch of texts; lower is closer):")
        print(
            f"  {'class':<12} {'held-out real':>13} {'other class':>12} {'model sampled':>14} "
            f"{'GRADMM init':>12} {'GRADMM final':>13}"
        )
        keys = ("heldout_same_class", "other_classes", "model_sampled", "gradmm_initial", "gradmm_final")
        for name, c in calibration.items():  # n/a: not computed (e.g. no held-out texts in DP mode)
            cells = ["n/a" if c[k] is None else f"{c[k]:.4f}" for k in keys]
            print(f"  {name:<12} {cells[0]:>13} {cells[1]:>12} {cells[2]:>14} {cells[3]:>12} {cells[4]:>13}")


def bench(model_args, task_args, args) -> dict:
    from hf_gradmm.bench import bench_step
    from hf_gradmm.models import load_model_and_tokenizer

    if args.what != "step":
        raise ValueError(f"Unknown benchmark {args.what!r}; available: step.")
    model, tokenizer = load_model_and_tokenizer(model_args.model)
    report = bench_step(model, tokenizer, task_args.to_task(), args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"x-step on {model_args.model}, B={args.batch}, T={args.seq_len}, {report['threads']} threads:")
        print(f"  reference (autograd create_graph + double backward, eager): {report['reference_s']:.3f} s")
        print(f"  ours (closed form, one backward, SDPA):                     {report['fast_s']:.3f} s")
        print(f"  ratio {report['ratio']:.2f}x; max |dX_ours - dX_ref| / max |dX_ref| = {report['max_rel_diff']:.2e}")
        print(
            f"  ours: {report['step_gflop']:.1f} GFLOP per step, {report['achieved_gflops']:.0f} GFLOP/s "
            f"(fp32 matmul peak here: {report['matmul_peak_gflops']:.0f} GFLOP/s)"
        )
        if "fast_bf16_s" in report:
            print(
                f"  ours in bf16: {report['fast_bf16_s']:.3f} s (ratio {report['ratio_bf16']:.2f}x, max rel diff "
                f"{report['max_rel_diff_bf16']:.2e}; bf16 matmul peak {report['matmul_peak_gflops_bf16']:.0f})"
            )
    return report


@dataclass
class SourceArguments:
    path: str | None = field(
        default=None,
        metadata={"help": "The folder to read (first positional argument): a synthesis output or a built dataset."},
    )


@dataclass
class PushArguments:
    repo_id: str | None = field(default=None, metadata={"help": "Hub dataset repo, e.g. someone/rt-gradmm."})
    private: bool = field(default=False, metadata={"help": "Create the repo private."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the login)."})


def _builder(source: SourceArguments, config):
    from hf_gradmm.builder import SyntheticDatasetBuilder

    if not source.path:
        raise ValueError("Give the synthesis output folder: hf-gradmm build DIR (or --path DIR).")
    return SyntheticDatasetBuilder(source.path, config)


def build(source: SourceArguments, config) -> Path:
    """Filter, score and package a synthesis output; prints where it went and the filtering counts."""
    builder = _builder(source, config)
    builder.build()
    folder = builder.save()
    _print_build(builder, folder)
    return folder


def _print_build(builder, folder) -> None:
    f, m = builder.report["filtering"], builder.report["memorisation"]
    print(f"built {folder}: {f['in']} texts in, {f['out']} out; dropped {f['dropped'] or 'none'}")
    for name, s in builder.report["per_class"].items():
        print(f"  {name:<12} {s['texts']:>4} texts  distance {s['mean_match_distance']:.4f}  NLL {s['mean_nll']:.3f}")
    r = builder.report["real_reference"]
    print(f"  real texts NLL {r['mean_nll']:.3f}; copies flagged: {m['flagged_copies']}")


def push(source: SourceArguments, push_args: PushArguments, config) -> str:
    """Push a built folder (building a synthesis output first) to the Hub."""
    from hf_gradmm.builder import BUILD_REPORT
    from hf_gradmm.hub import push_dataset_folder

    if not push_args.repo_id:
        raise ValueError("Give the target repo: hf-gradmm push DIR --repo-id someone/name.")
    if not source.path:
        raise ValueError("Give the folder to push: hf-gradmm push DIR --repo-id someone/name.")
    folder = Path(source.path)
    if not (folder / BUILD_REPORT).exists():
        built = Path(config.output or folder / "dataset")
        if (built / BUILD_REPORT).exists():
            folder = built
        else:
            folder = build(source, config)
    url = push_dataset_folder(folder, push_args.repo_id, private=push_args.private, token=push_args.token)
    print(f"pushed {folder} to {url}")
    return url


def _parse(dataclass_types, argv):
    from trl import TrlParser

    return TrlParser(dataclass_types).parse_args_and_config(argv)


USAGE = """usage: hf-gradmm <command> [--config file.yaml] [options]

commands:
  info        version, tasks and models, and what is available offline now (--json)
  preview     load a task and a model; show real examples, label words and zero-shot guesses
  synthesize  make a synthetic dataset by gradient matching (GRADMM)
  bench step  time one x-step: the reference formulation against ours
  build       filter, score and package a synthesis output (dataset, card, exports)
  push        push a built dataset, its card and config to the Hub (builds a synthesis output first)
  evaluate    fine-tune target models on GRADMM data and on baselines at equal budget; one table
  audit       membership inference: can a model fine-tuned on the data tell the real target examples apart?

Run 'hf-gradmm <command> --help' for a command's options."""


def command_arguments(command: str) -> list[type]:
    """The argument dataclasses of a subcommand, in parsing order (also read by hf_gradmm.reference)."""
    from hf_gradmm.arguments import ModelArguments, TaskArguments
    from hf_gradmm.bench import BenchArguments
    from hf_gradmm.builder import BuilderConfig
    from hf_gradmm.config import GradMatchConfig
    from hf_gradmm.evaluation import EvaluateArguments, FinetuneConfig
    from hf_gradmm.evaluation.audit import AuditArguments

    return {
        "info": [InfoArguments],
        "preview": [TaskArguments, ModelArguments, PreviewArguments],
        "synthesize": [GradMatchConfig, ModelArguments],
        "bench": [ModelArguments, TaskArguments, BenchArguments],
        "build": [SourceArguments, BuilderConfig],
        "push": [SourceArguments, PushArguments, BuilderConfig],
        "evaluate": [TaskArguments, EvaluateArguments, FinetuneConfig],
        "audit": [AuditArguments, FinetuneConfig],
    }[command]


COMMANDS = ("info", "preview", "synthesize", "bench", "build", "push", "evaluate", "audit")
POSITIONAL = {"bench": "--what", "build": "--path", "push": "--path"}  # first bare argument -> this flag


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    if argv[0] in {"-V", "--version"}:
        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"hf-gradmm: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
        return 2
    if command in POSITIONAL and rest and not rest[0].startswith("-"):
        rest = [POSITIONAL[command], rest[0], *rest[1:]]
    try:
        parsed = _parse(command_arguments(command), rest)
        if command == "synthesize" and parsed[0].num_processes > 1 and "WORLD_SIZE" not in os.environ:
            from hf_gradmm.distributed import launch

            return launch([command, *rest], parsed[0].num_processes, parsed[0].use_cpu)
        if command == "info":
            info(json_output=parsed[0].json)
        elif command == "preview":
            preview(*parsed)
        elif command == "synthesize":
            synthesize(*parsed)
        elif command == "bench":
            bench(*parsed)
        elif command == "build":
            build(*parsed)
        elif command == "push":
            push(*parsed)
        elif command == "evaluate":
            from hf_gradmm.evaluation import run_evaluation
            from hf_gradmm.evaluation.harness import markdown_table

            task_args, args, recipe = parsed
            results = run_evaluation(task_args.to_task(), args, recipe)
            print(markdown_table(results))
            print(f"wrote {args.output} and its .md table and .png figure")
        elif command == "audit":
            from hf_gradmm.evaluation.audit import audit_table, run_audit

            print(audit_table(run_audit(*parsed)))
            print(f"wrote {parsed[0].output} and its .md table")
    except (ValueError, RuntimeError, OSError) as err:
        print(f"hf-gradmm {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
