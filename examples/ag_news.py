"""AG News (Hub, fancyzhx/ag_news): synthetic news snippets, world / sports / business / science.

Needs the Hub (or HF_ENDPOINT, or HF_HUB_OFFLINE=1 with the dataset cached); when the Hub
cannot be reached it fails in seconds, naming the fixes.

    python examples/ag_news.py --quick                       # the pipeline on a tiny budget
    python examples/ag_news.py                               # configs/ag_news.yaml's budget
    python examples/ag_news.py --push-to-hub you/ag-news-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "ag_news.yaml"))
