"""CoLA (Hub, glue/cola): English sentences, unacceptable / acceptable (one text per example).

Needs the Hub (or HF_ENDPOINT, or HF_HUB_OFFLINE=1 with the dataset cached); when the Hub
cannot be reached it fails in seconds, naming the fixes.

    python examples/cola.py --quick                       # the pipeline on a tiny budget
    python examples/cola.py                               # configs/cola.yaml's budget
    python examples/cola.py --push-to-hub you/cola-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "cola.yaml"))
