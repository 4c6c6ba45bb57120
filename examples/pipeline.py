"""The pipeline every example runs, written in hf_gradmm's public Python API.

    synthesize (GradMatchSynthesizer) -> build and filter (SyntheticDatasetBuilder)
    -> push to the Hub (optional) -> fine-tune target models on the built data and score them
       on real test data (TransferCallback)

An example script only names its YAML config (examples/configs/<task>.yaml). A config has the
sections ``model`` (generator), ``synthesize`` (GradMatchConfig fields), ``build``
(BuilderConfig fields), ``evaluate`` (target ``models``, ``seeds``, and the FinetuneConfig
``recipe``), and ``quick``: the same sections with a small budget, merged in by ``--quick``.
Outputs go to ``--output-dir`` (default ``outputs/<config name>``): ``synthesis/`` (resumable),
``dataset/`` (the built dataset with its card) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from hf_gradmm import (
    BuilderConfig,
    FinetuneConfig,
    GradMatchConfig,
    GradMatchSynthesizer,
    SyntheticDatasetBuilder,
    TransferCallback,
    load_model_and_tokenizer,
    load_task,
)


def parser(description: str, config: str) -> argparse.ArgumentParser:
    """The flags every example takes; ``config`` is the default YAML file."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=config, help="YAML config (sections: model, synthesize, build, evaluate).")
    p.add_argument("--quick", action="store_true", help="Merge the config's `quick` section: a few minutes on CPU.")
    p.add_argument("--output-dir", default=None, help="Default: outputs/<config name>[-quick].")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="Also push the built dataset there.")
    p.add_argument("--private", action="store_true", help="Create the Hub repo private.")
    return p


def load_config(path: str | Path, quick: bool = False) -> dict:
    """The YAML config; with ``quick``, its ``quick`` section merged in (nested keys one by one)."""

    def merge(base: dict, extra: dict) -> dict:
        for key, value in extra.items():
            base[key] = merge(base.get(key) or {}, value) if isinstance(value, dict) else value
        return base

    config = yaml.safe_load(Path(path).read_text())
    quick_section = config.pop("quick", None) or {}
    return merge(config, quick_section) if quick else config


def run(config: dict, output_dir: str | Path, push_to_hub: str | None = None, private: bool = False) -> dict:
    """Synthesize, build, optionally push, then fine-tune and evaluate; returns (and writes) a summary."""
    start = time.perf_counter()
    output_dir = Path(output_dir)
    args = GradMatchConfig(**config["synthesize"], output_dir=str(output_dir / "synthesis"), resume=True)
    # The data first: a Hub task fails here, in seconds, when the Hub cannot be reached.
    data, task = load_task(args.to_task())
    model, tokenizer = load_model_and_tokenizer(config.get("model", "smollm2-135m"))

    # 1. Synthesize: GRADMM rounds, each written to disk as it finishes (a rerun resumes).
    synthesizer = GradMatchSynthesizer(
        model,
        args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        task=task,
    )
    result = synthesizer.train()

    # 2. Build: clean, label-filter, score, deduplicate; the dataset card and memorisation report.
    build_args = BuilderConfig(**config.get("build", {}))
    builder = SyntheticDatasetBuilder(result, build_args, model, processing_class=tokenizer, real_data=(data, task))
    dataset = builder.build()
    folder = builder.save(output_dir / "dataset")

    # 3. Push (optional): the dataset, its card, config and reports, through HF_ENDPOINT.
    url = builder.push_to_hub(push_to_hub, private=private) if push_to_hub else None

    # 4. Transfer: fine-tune each target on the built texts (checkpoint chosen on real dev data),
    #    then score it once on real test data.
    evaluate = config.get("evaluate", {})
    transfer = TransferCallback(
        models=evaluate.get("models", ["smollm2-135m"]),
        task=task,
        recipe=FinetuneConfig(**evaluate.get("recipe", {})),
        seeds=evaluate.get("seeds", 1),
    )
    scores = transfer.evaluate(dataset["train"]["text"], dataset["train"]["label"])

    summary = {
        "task": task.name,
        "generator": config.get("model", "smollm2-135m"),
        "synthetic_texts": len(result.texts),
        "built_texts": len(dataset["train"]),
        "dataset_dir": str(folder),
        "hub_url": url,
        "calibration": result.metrics.get("calibration"),
        "transfer": scores,
        "seconds": time.perf_counter() - start,
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{task.name}: {len(dataset['train'])} texts built in {folder}" + (f", pushed to {url}" if url else ""))
    for row in dataset["train"].select(range(min(4, len(dataset["train"])))):
        print(f"  [{task.label_names[row['label']]}] {row['text']}")
    for name, s in scores.items():
        print(f"  fine-tuned {name} on them: real test accuracy {s['mean']:.3f} +- {s['std']:.3f}")
    print(f"  {summary['seconds']:.0f} s; summary in {output_dir / 'summary.json'}")
    return summary


def main(description: str, config: str, argv: list[str] | None = None) -> None:
    """Entry point of the per-task scripts: errors (unreachable Hub, bad config) end in one clear line."""
    flags = parser(description, config).parse_args(argv)
    name = Path(flags.config).stem + ("-quick" if flags.quick else "")
    try:
        run(
            load_config(flags.config, flags.quick),
            flags.output_dir or Path("outputs") / name,
            push_to_hub=flags.push_to_hub,
            private=flags.private,
        )
    except (ValueError, RuntimeError, OSError) as err:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {err}")
