"""Rotten Tomatoes pairs (offline, derived): two movie reviews, do they give the same verdict? no / yes.

A sentence-pair task derived at run time from the offline Rotten Tomatoes snippets (docs/tasks.md),
the pair task that runs without the Hub; `--quick` runs here end to end. The built dataset has
`sentence1`, `sentence2`, `label`, the columns run_glue.py reads.

    python examples/rotten_tomatoes_pairs.py --quick                       # the pipeline on a tiny budget
    python examples/rotten_tomatoes_pairs.py                               # configs/rotten_tomatoes_pairs.yaml's budget
    python examples/rotten_tomatoes_pairs.py --push-to-hub you/rt-pairs-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "rotten_tomatoes_pairs.yaml"))
