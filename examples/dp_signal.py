"""How much class signal survived the DP noise: score synthesis runs against the CLEAN targets.

A DP run only ever sees noisy class targets, and its reported distances are to those (near 1
when the noise is large). The data owner can ask the question the noise hides: are the texts
nearer the clean (non-private) target of their own class than the other class's? This script
recomputes the clean targets of a run's real target pool (same seed, model and template) and
prints, per run and class, the batch distance of its texts to every class's clean target
(the mean over the class's rounds).

It reads the private data: run it locally, and do not publish its output as part of a DP release.

    python examples/dp_signal.py --runs nodp=out/rt,dp4=out/rt_dp4 --output dp_signal.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hf_gradmm.engine.gradients import class_target, select_matched
from hf_gradmm.engine.objective import MatchingObjective, template_parts
from hf_gradmm.models import load_model_and_tokenizer
from hf_gradmm.rundir import read_synthesis_dir
from hf_gradmm.targets.pool import real_pool
from hf_gradmm.tasks import label_token_ids, load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="name=DIR pairs, comma-separated (the first defines the pool)")
    parser.add_argument("--output", default="dp_signal.json")
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.runs.split(","))
    _, config, metrics = read_synthesis_dir(next(iter(runs.values())))
    model, tok = load_model_and_tokenizer(metrics["generator"])
    data, task = load_task(config.to_task())
    pool = real_pool(data["train"], task, config.target_examples, config.heldout_examples, config.seed)
    words = label_token_ids(task, tok)
    matched = select_matched(model, config.matched_params)
    lead, tail = template_parts(task.template, tok)
    objectives = {}
    for c, name in enumerate(task.label_names):
        prompts = [task.format_prompt(t) for t in pool[c]["target"]]
        target = class_target(model, tok, matched, prompts, words[c], config.target_batch_size)
        objectives[name] = MatchingObjective(model, matched, target, words[c], lead, tail, config.distance)
    out = {}
    for run, folder in runs.items():
        per_class: dict[str, list[dict[str, float]]] = {}
        for path in sorted(Path(folder, "rounds").glob("round_*.json")):  # one batch per round
            record = json.loads(path.read_text())
            ids = torch.tensor(record["token_ids"])
            scores = {name: objective.value(ids) for name, objective in objectives.items()}
            per_class.setdefault(task.label_names[record["label"]], []).append(scores)
        out[run] = {  # texts of class -> mean batch distance to each class's clean target
            texts_of: {name: sum(s[name] for s in batches) / len(batches) for name in objectives}
            for texts_of, batches in per_class.items()
        }
        print(run, json.dumps(out[run]))
    Path(args.output).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
