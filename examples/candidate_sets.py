"""Draw candidate training sets for ``hf-gradmm study``: which distance predicts training value?

The study needs many training sets of N texts per class that differ in how well they train:
subsets of GRADMM outputs (each round of a large synthesis is one small synthesis), the best texts
by matching distance, mixtures with the model's own samples and with real texts. This script
writes each as a training-set file (.jsonl: text, label) and the ``--synthetic`` value that makes
``hf-gradmm evaluate`` fine-tune on all of them (each its own row, named as here);
``hf-gradmm study`` then correlates.

    python examples/candidate_sets.py --synthesis out/rt100 --sets-from results_training \
        --per-class 10 --out candidates
    hf-gradmm evaluate --methods gradmm --synthetic "$(cat candidates/synthetic.txt)" --seeds 1 \
        --reference none ... --output cand.json
    hf-gradmm study --results results.json,cand.json --synthesis out/rt100

``--sets-from``: the training sets an earlier ``hf-gradmm evaluate`` saved (its ``<stem>_training``
folder): its ``llm`` and ``random`` sets are the pools of model-written and real texts.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from datasets import Dataset


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_class(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["label"], []).append(r)
    return out


def rounds(synthesis: Path) -> list[list[dict]]:
    """One candidate per round index k: the k-th round of every class (each a small synthesis)."""
    per_class: dict[int, list[list[dict]]] = {}
    for f in sorted((synthesis / "rounds").glob("round_*.json")):
        r = json.loads(f.read_text())
        per_class.setdefault(r["label"], []).append([{"text": t, "label": r["label"]} for t in r["texts"]])
    return [sum(parts, []) for parts in zip(*per_class.values())]


def mix(a: dict[int, list[dict]], b: dict[int, list[dict]], per_class: int, rng: random.Random) -> list[dict]:
    """Half of each class from ``a``, half from ``b``."""
    half = per_class // 2
    return [r for c in a for r in rng.sample(a[c], half) + rng.sample(b[c], per_class - half)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthesis", type=Path, required=True, help="a synthesis with several rounds per class")
    parser.add_argument("--sets-from", type=Path, required=True, help="an evaluation's <stem>_training folder")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--skip-rounds", type=int, default=0, help="rounds already evaluated elsewhere")
    parser.add_argument("--subsets", type=int, default=3, help="random subsets across all rounds")
    parser.add_argument("--mixtures", type=int, default=2, help="of each pair of pools")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    k = args.per_class
    rows = Dataset.load_from_disk(str(args.synthesis)).to_list()
    gradmm = by_class([{"text": r["text"], "label": r["label"], "d": r["match_distance"]} for r in rows])
    pools = {
        name: by_class([r for f in sorted((args.sets_from / name).glob("set*.jsonl")) for r in read_jsonl(f)])
        for name in ("llm", "random")
    }
    candidates: dict[str, list[dict]] = {}
    for i, batch in enumerate(rounds(args.synthesis)[args.skip_rounds :], start=args.skip_rounds):
        candidates[f"round{i}"] = batch
    candidates["lowest_distance"] = [r for c in gradmm for r in sorted(gradmm[c], key=lambda r: r["d"])[:k]]
    candidates["highest_distance"] = [r for c in gradmm for r in sorted(gradmm[c], key=lambda r: -r["d"])[:k]]
    for i in range(args.subsets):
        candidates[f"subset{i}"] = [r for c in gradmm for r in rng.sample(gradmm[c], k)]
    pairs = {"gradmm+llm": (gradmm, pools["llm"]), "gradmm+real": (gradmm, pools["random"]),
             "llm+real": (pools["llm"], pools["random"])}  # fmt: skip
    for name, (a, b) in pairs.items():
        for i in range(args.mixtures):
            candidates[f"{name}{i}".replace("+", "_")] = mix(a, b, k, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    spec = []
    for name, batch in candidates.items():
        path = args.out / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in batch))
        spec.append(f"{name}={path}")  # each its own row of the evaluation, named as here
    spec = ",".join(spec)
    (args.out / "synthetic.txt").write_text(spec)
    print(f"{len(candidates)} candidate sets in {args.out}; --synthetic value in {args.out / 'synthetic.txt'}")


if __name__ == "__main__":
    main()
