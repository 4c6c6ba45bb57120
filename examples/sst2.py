"""SST-2 (Hub, glue/sst2): synthetic movie-review sentences, negative / positive.

Needs the Hub (or HF_ENDPOINT, or HF_HUB_OFFLINE=1 with the dataset cached); when the Hub
cannot be reached it fails in seconds, naming the fixes.

    python examples/sst2.py --quick                       # the pipeline on a tiny budget
    python examples/sst2.py                               # configs/sst2.yaml's budget
    python examples/sst2.py --push-to-hub you/sst2-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "sst2.yaml"))
