"""IMDB (Hub, stanfordnlp/imdb): synthetic movie reviews, negative / positive.

Needs the Hub (or HF_ENDPOINT, or HF_HUB_OFFLINE=1 with the dataset cached); when the Hub
cannot be reached it fails in seconds, naming the fixes.

    python examples/imdb.py --quick                       # the pipeline on a tiny budget
    python examples/imdb.py                               # configs/imdb.yaml's budget
    python examples/imdb.py --push-to-hub you/imdb-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "imdb.yaml"))
