"""``hf-gradmm audit``: does fine-tuning on a dataset reveal which real examples made the targets?

A loss-based membership-inference test (Yeom et al., 2018). The members are the real target
examples of a synthesis run (the only real texts its targets read); the non-members are as many
real examples of the same split and classes that no target read. A model is fine-tuned on each
training source with the evaluation recipe (checkpoint chosen on real dev data), then every
member and non-member gets its loss, the cross-entropy of its label word over the classes'
label words; a lower loss says "member". The AUC of that score (scikit-learn's
``roc_auc_score``) is 0.5 when the model cannot tell them apart, 1.0 when it always can.
Sources: each ``--synthetic name=DIR``, ``real_pool`` (fine-tuning on the members themselves:
the leak to compare with) and ``none`` (the model as given: the AUC of chance differences).
Beside the AUC, each synthetic source gets the builder's memorisation figures against the
members.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from hf_gradmm.dataset.memorisation import memorisation_report
from hf_gradmm.distributed import device
from hf_gradmm.evaluation.baselines import gradmm_texts
from hf_gradmm.evaluation.harness import split_sample, synthetic_dirs
from hf_gradmm.evaluation.report import write_json_and_table
from hf_gradmm.finetune import FinetuneConfig, finetune
from hf_gradmm.lm import label_word_logprobs
from hf_gradmm.models import load_model_and_tokenizer
from hf_gradmm.rundir import read_synthesis_dir
from hf_gradmm.targets.pool import real_pool
from hf_gradmm.tasks import load_task


@dataclass
class AuditArguments:
    """What ``hf-gradmm audit`` compares (the fine-tuning recipe comes beside it)."""

    synthetic: str | None = field(
        default=None,
        metadata={"help": "Synthesis output(s), DIR or name=DIR pairs separated by commas; the first one's run "
                  "defines the members (its target examples)."},
    )  # fmt: skip
    model: str = field(default="smollm2-135m", metadata={"help": "The model fine-tuned and attacked."})
    references: str = field(
        default="real_pool,none",
        metadata={"help": "Reference sources: 'real_pool' (fine-tune on the members), 'none' (no fine-tuning)."},
    )
    seeds: int = field(default=1, metadata={"help": "Fine-tuning seeds per source."})
    output: str = field(default="audit.json", metadata={"help": "Audit JSON; a .md table is written beside it."})


def membership_auc(member_losses: list[float], nonmember_losses: list[float]) -> float:
    """AUC of ``-loss`` as the membership score (members are the positives)."""
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(member_losses) + [0] * len(nonmember_losses)
    return float(roc_auc_score(labels, [-x for x in member_losses + nonmember_losses]))


def chance_band(members: int, nonmembers: int, level: float = 0.95) -> float:
    """Half-width of the range an AUC falls in with probability ``level`` when the model does not
    tell members from non-members at all (the Mann-Whitney null: mean 0.5, variance
    ``(n1 + n2 + 1) / (12 n1 n2)``, normal approximation). An AUC inside 0.5 +- this is no evidence
    of membership leakage; with 100 and 100 examples it is 0.080."""
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    return z * math.sqrt((members + nonmembers + 1) / (12 * members * nonmembers))


def example_losses(model, tokenizer, task, texts: list[str], labels: list[int]) -> list[float]:
    logprobs = label_word_logprobs(model, tokenizer, task, texts, batch_size=32)
    return [-float(logprobs[i, y]) for i, y in enumerate(labels)]


def members_and_nonmembers(synthesis_dir: Path, data, task) -> tuple[tuple[list, list], tuple[list, list]]:
    """The run's target examples, and as many other examples per class of the same split (seeded)."""
    _, config, _ = read_synthesis_dir(synthesis_dir)
    source = data["train"] if config.real_split == "train" else data["validation"]
    pool = real_pool(source, task, config.target_examples, 0, config.seed, config.real_split)
    used = {t for c in pool for t in pool[c]["target"]}
    rng = random.Random(config.seed + 1)
    members, nonmembers = ([], []), ([], [])
    for c in sorted(pool):
        others = [t for t, y in zip(source["text"], source["label"]) if y == c and t not in used]
        if len(others) < len(pool[c]["target"]):
            raise ValueError(f"Class {task.label_names[c]!r} has too few examples outside the targets to audit.")
        chosen = rng.sample(others, len(pool[c]["target"]))
        members[0].extend(pool[c]["target"])
        members[1].extend([c] * len(pool[c]["target"]))
        nonmembers[0].extend(chosen)
        nonmembers[1].extend([c] * len(chosen))
    return members, nonmembers


def run_audit(args: AuditArguments, recipe: FinetuneConfig, loaded: tuple | None = None) -> dict:
    """Fine-tune on every source, attack, write ``args.output`` (+ .md); returns the results."""
    several = synthetic_dirs(args.synthetic)
    if not several:
        raise ValueError("Give the synthesis output(s) to audit: --synthetic DIR or name=DIR,name2=DIR2.")
    joined = [name for name, paths in several.items() if len(paths) != 1]
    if joined:
        raise ValueError(
            f"The audit attacks one synthesis per row; {joined} join several with '+'. Give each its own "
            "name: --synthetic a=DIR1,b=DIR2."
        )
    synthetic = {name: paths[0] for name, paths in several.items()}
    first = next(iter(synthetic.values()))
    _, config, metrics = read_synthesis_dir(first)
    data, task = load_task(config.to_task())
    members, nonmembers = members_and_nonmembers(first, data, task)
    model, tokenizer = loaded or load_model_and_tokenizer(args.model, device=device())
    dev = split_sample(data["validation"], recipe.dev_examples, seed=0)
    references = [r.strip() for r in args.references.split(",") if r.strip()]
    unknown = [r for r in references if r not in ("real_pool", "none")]
    if unknown:
        raise ValueError(f"Unknown reference(s) {unknown}; choose from real_pool, none.")
    rows = {}
    for name in [*synthetic, *references]:
        if name == "none":
            texts = None
        elif name == "real_pool":
            texts = members
        else:
            texts = gradmm_texts(synthetic[name], task, per_class=10**9)
        aucs = []
        for seed in range(1 if texts is None else args.seeds):
            tuned = model if texts is None else finetune(model, tokenizer, task, *texts, dev, recipe, seed)[0]
            inside = example_losses(tuned, tokenizer, task, *members)
            outside = example_losses(tuned, tokenizer, task, *nonmembers)
            aucs.append(membership_auc(inside, outside))
        row = {"auc": aucs, "mean": statistics.mean(aucs), "training_texts": 0 if texts is None else len(texts[0])}
        if name in synthetic:
            row["dp"] = read_synthesis_dir(synthetic[name])[2].get("dp")
            row["memorisation"] = memorisation_report(texts[0], members[0], copy_ngram=8)[1]
        rows[name] = row
    results = {
        "task": task.name,
        "model": args.model,
        "members": len(members[0]),
        "nonmembers": len(nonmembers[0]),
        "chance_band_95": chance_band(len(members[0]), len(nonmembers[0])),
        "recipe": vars(recipe),
        "generator": metrics.get("generator"),
        "rows": rows,
    }
    write_json_and_table(results, Path(args.output), audit_table(results))
    return results


def audit_table(results: dict) -> str:
    lines = [
        f"Membership inference on `{results['task']}` ({results['members']} members, {results['nonmembers']} "
        f"non-members), model `{results['model']}`. Without any membership signal the AUC falls within "
        f"0.5 +- {results['chance_band_95']:.3f} 95% of the time:",
        "",
        "| training source | texts | DP epsilon | AUC (mean over seeds) | longest run shared with a member (max) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in results["rows"].items():
        eps = (row.get("dp") or {}).get("epsilon", "none") if name not in ("real_pool", "none") else "-"
        memo = row.get("memorisation")
        lines.append(
            f"| {name} | {row['training_texts']} | {eps} | {row['mean']:.3f} | "
            f"{memo['max_longest_common_ngram'] if memo else '-'} |"
        )
    return "\n".join(lines) + "\n"
