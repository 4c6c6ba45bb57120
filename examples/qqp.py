"""QQP (Hub, glue/qqp): pairs of Quora questions, not_duplicate / duplicate.

Needs the Hub (or HF_ENDPOINT, or HF_HUB_OFFLINE=1 with the dataset cached); when the Hub
cannot be reached it fails in seconds, naming the fixes.
A sentence-pair task: each synthetic example is two texts (the template's middle tokens
between them stay fixed); the built dataset has GLUE's two text columns.

    python examples/qqp.py --quick                       # the pipeline on a tiny budget
    python examples/qqp.py                               # configs/qqp.yaml's budget
    python examples/qqp.py --push-to-hub you/qqp-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "qqp.yaml"))
