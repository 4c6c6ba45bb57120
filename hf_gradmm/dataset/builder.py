"""``SyntheticDatasetBuilder``: from the synthesizer's raw texts to a filtered, Hub-ready dataset.

The pipeline follows the authors' filtering notebook, in this order:

1. clean: collapse whitespace; drop texts shorter than ``min_words`` words and texts with a
   word repeated ``max_repeat`` times in a row (LM loops);
2. label filter: the generator, prompted with a few demonstrations and the task template,
   scores each class's label word (the same single token as in generation), with contextual
   calibration; a text it assigns to another class is dropped (or relabelled);
3. score: the text's own matching distance to its class target + ``nll_weight`` x its mean NLL
   (lower is better);
4. deduplicate: exact (case- and whitespace-insensitive), then near duplicates by MinHash over
   character 5-grams (``datasketch``), keeping the better-scored text;
5. keep the ``top_n`` best per class; optionally balance the classes' mean scores.

Then every kept text is compared with the real training data (:mod:`hf_gradmm.dataset.memorisation`),
and the survivors, their metrics, a dataset card and the config are written to one folder (its
layout: :mod:`hf_gradmm.rundir`) that :func:`hf_gradmm.dataset.hub.push_dataset_folder` pushes as is.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_gradmm.arguments import SEED_MAX, check_choices, check_number
from hf_gradmm.dataset import filters
from hf_gradmm.dataset.card import dataset_card
from hf_gradmm.dataset.hub import push_dataset_folder
from hf_gradmm.dataset.memorisation import memorisation_report
from hf_gradmm.distributed import device
from hf_gradmm.lm import label_word_logprobs, mean_text_nll
from hf_gradmm.models import load_model_and_tokenizer
from hf_gradmm.rundir import (
    BUILD_REPORT,
    CONFIG_FILE,
    DATA_DIR,
    MEMORISATION,
    MEMORISATION_LOCAL,
    read_synthesis_dir,
)
from hf_gradmm.targets.privacy import build_leaking_options
from hf_gradmm.tasks import load_task
from hf_gradmm.tasks.registry import split_pair


@dataclass
class BuilderConfig:
    """How raw synthetic texts become the published dataset (``hf-gradmm build`` / ``push`` flags)."""

    output: str | None = field(
        default=None, metadata={"help": "Folder for the built dataset. Default: <synthesis output dir>/dataset."}
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model of the label filter and the NLLs. Default: the generator the synthesis run recorded "
            "(keep it: the card's perplexities and the label filter are measured with it)."
        },
    )
    label_filter: Literal["remove", "relabel", "off"] = field(
        default="remove",
        metadata={
            "help": "What to do with a text the few-shot classifier assigns to another class: 'remove' (the "
            "reference default), 'relabel' (give it the classifier's class), or 'off' (keep it)."
        },
    )
    fewshot: Literal["task", "real", "none"] = field(
        default="task",
        metadata={
            "help": "Demonstrations of the label filter: 'task' (the task's hand-written public examples; for your "
            "own data, which has none, a one-line instruction from --domain and --class-descriptions), "
            "'real' (fewshot_real_per_class real training examples per class: real data reaches the filter), "
            "'none' (zero-shot)."
        },
    )
    fewshot_real_per_class: int = field(default=1, metadata={"help": "Real demonstrations per class for 'real'."})
    fewshot_calibration: bool = field(
        default=True,
        metadata={
            "help": "Contextual calibration of the label filter: subtract the class log-probabilities of "
            "content-free inputs ('N/A', '', '[MASK]'). Without it SmolLM2 calls 99 percent of real Rotten Tomatoes "
            "texts positive (docs/builder.md)."
        },
    )
    nll_weight: float = field(
        default=1.0,
        metadata={"help": "alpha in score = match_distance + alpha * mean token NLL (lower is better)."},
    )
    near_duplicate_threshold: float = field(
        default=0.8,
        metadata={
            "help": "Estimated Jaccard similarity of character 5-gram sets (MinHash) from which two texts count "
            "as near duplicates; the worse-scored one is dropped. 1.0 keeps everything but exact duplicates."
        },
    )
    minhash_permutations: int = field(default=128, metadata={"help": "MinHash permutations (accuracy vs speed)."})
    top_n: int = field(default=0, metadata={"help": "Keep the best N texts per class by score; 0 keeps all."})
    balance: bool = field(
        default=False,
        metadata={"help": "Drop the worst-scored texts of classes whose mean score exceeds the best class's mean."},
    )
    min_words: int = field(default=3, metadata={"help": "Texts with fewer words are dropped as too short."})
    max_repeat: int = field(
        default=3,
        metadata={
            "help": "Texts where one word occurs this many times in a row are dropped as degenerate (LM loops "
            "such as 'embellish embellish embellish'); 0 keeps them."
        },
    )
    include_real_splits: bool = field(
        default=False,
        metadata={
            "help": "Add the task's real validation and test splits to the DatasetDict (they are real data: the "
            "card says so)."
        },
    )
    copy_ngram: int = field(
        default=8,
        metadata={"help": "A text sharing a run of this many consecutive words with one real text is flagged."},
    )
    real_nll_examples: int = field(
        default=200,
        metadata={"help": "Real training texts whose NLL under the model is the card's reference perplexity."},
    )
    license: str | None = field(default=None, metadata={"help": "License id for the card (e.g. 'apache-2.0')."})
    seed: int = field(default=42, metadata={"help": "Seed of the real-text samples (demonstrations, reference NLL)."})
    allow_empty_classes: bool = field(
        default=False,
        metadata={
            "help": "Build even when the filters leave a class with no texts (refused by default: a dataset "
            "missing a class trains a classifier that never predicts it)."
        },
    )

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("fewshot_real_per_class", "minhash_permutations", "copy_ngram", "real_nll_examples"):
            check_number(self, name, 1)
        check_number(self, "top_n", 0, note="0 keeps all")
        check_number(self, "min_words", 0)
        check_number(self, "max_repeat", 0, note="0 keeps them")
        if self.max_repeat == 1:
            raise ValueError("--max-repeat (max_repeat) must be 0 (off) or at least 2; got 1, which drops every text.")
        check_number(self, "nll_weight", 0)
        check_number(self, "near_duplicate_threshold", 0, 1, low_open=True)
        check_number(self, "seed", 0, SEED_MAX)
        try:  # datasketch splits the permutations into bands for the threshold: too few fail at build time
            filters.near_duplicates_dropped([], self.near_duplicate_threshold, self.minhash_permutations)
        except ValueError as err:
            raise ValueError(
                f"--near-duplicate-threshold {self.near_duplicate_threshold} needs more than --minhash-permutations "
                f"{self.minhash_permutations} (datasketch: {err}); raise --minhash-permutations or lower the "
                "threshold (1.0 keeps all but exact duplicates)."
            ) from None


class SyntheticDatasetBuilder:
    """Filters, scores and packages a synthesis output (see the module docstring).

    Args:
        synthetic (`str`, `Path` or `SynthesisResult`):
            A ``synthesize`` output folder, or the ``SynthesisResult`` of a finished run.
        args (`BuilderConfig`, *optional*, defaults to `BuilderConfig()`):
            The filtering, scoring and export options.
        model (`PreTrainedModel`, *optional*):
            The generator (the label filter and the NLLs use it); default: the generator the run
            recorded, loaded with :func:`hf_gradmm.load_model_and_tokenizer`.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            The generator's tokenizer; required together with ``model``.
        real_data (`tuple[DatasetDict, TaskSpec]`, *optional*):
            The task's real splits and task; default: loaded as the run loaded them.
    """

    def __init__(self, synthetic, args: BuilderConfig | None = None, model=None, processing_class=None, real_data=None):
        self.source_dir = Path(getattr(synthetic, "output_dir", None) or synthetic)
        self.args = args or BuilderConfig()
        self.rows, self.synthesis_config, self.synthesis_metrics = read_synthesis_dir(self.source_dir)
        if model is None:
            name = self.args.model or self.synthesis_metrics.get("generator")
            if not name:
                raise ValueError(f"{self.source_dir} records no generator model; pass --model.")
            model, processing_class = load_model_and_tokenizer(name, device=device())
        if processing_class is None:
            raise ValueError("Pass the generator's tokenizer as processing_class together with the model.")
        self.model, self.tokenizer = model, processing_class
        self.generator = (
            self.synthesis_metrics.get("generator") or self.args.model or getattr(model, "hf_gradmm_name", None)
        )
        task = self.synthesis_config.to_task()
        self.real, self.task = real_data if real_data is not None else load_task(task)
        # DP synthesis: what this builder publishes may depend on the real data only through the noisy targets.
        self.dp = bool(self.synthesis_metrics.get("dp"))
        leaks = build_leaking_options(self.args)
        if self.dp and leaks:
            raise ValueError(f"{self.source_dir} was synthesized with differential privacy; " + "; ".join(leaks) + ".")
        self.report: dict = {}
        self.dataset: DatasetDict | None = None
        self.memorisation: list[dict] = []

    # ------------------------------------------------------------------ pipeline
    def _demonstrations(self) -> list[tuple[str, int]]:
        if self.args.fewshot == "none":
            return []
        if self.args.fewshot == "task":  # none written for a custom task: its instruction stands in
            return list(self.task.demonstrations)
        rng = random.Random(self.args.seed)
        train = self.real["train"]
        demos = []
        for c in range(self.task.num_labels):
            idx = [i for i, lab in enumerate(train["label"]) if lab == c]
            demos += [(train[i]["text"], c) for i in rng.sample(idx, min(self.args.fewshot_real_per_class, len(idx)))]
        rng.shuffle(demos)
        return demos

    def build(self) -> DatasetDict:
        """Run the pipeline; returns the DatasetDict and fills :attr:`report`."""
        args = self.args
        rows = [dict(r) for r in self.rows]
        dropped: dict[str, int] = {}
        self.class_losses: dict[str, Counter] = {}  # per step, the texts each class lost (names the filter)
        count_in, given = len(rows), rows
        long_enough, rows = filters.clean(rows, args.min_words, args.max_repeat)  # 1. clean
        _drop(dropped, "too_short", given, long_enough, self.class_losses)
        _drop(dropped, "repetitive", long_enough, rows, self.class_losses)
        before = [dict(r) for r in rows]
        rows, relabelled = self._label_filtered(rows, dropped)  # 2. label filter
        _drop({}, "label_mismatch" if args.label_filter == "remove" else "relabelled", before, rows, self.class_losses)
        for r in rows:  # 3. score
            r["score"] = r["match_distance"] + args.nll_weight * r["nll"]
        rows.sort(key=lambda r: r["score"])
        rows = self._deduplicated_and_cut(rows, dropped)  # 4. and 5.
        self.memorisation, self.memorisation_summary = memorisation_report(
            [r["text"] for r in rows], list(self.real["train"]["text"]), args.copy_ngram
        )
        for r, m in zip(rows, self.memorisation):
            # DP: the comparison with the real data stays in the local file; the published columns are empty.
            r.update({k: None if self.dp else m[k] for k in ("longest_common_ngram", "ngram8_share", "copied")})
        rows.sort(key=lambda r: (r["label"], r["round"], r["score"]))
        self._refuse_empty_classes(rows)
        self.dataset = self._dataset_dict(rows)
        self.report = self._report(rows, count_in, dropped, relabelled)
        return self.dataset

    def _label_filtered(self, rows: list[dict], dropped: dict[str, int]) -> tuple[list[dict], int]:
        """Score every text's class with the few-shot classifier; remove or relabel the disagreeing ones."""
        args, relabelled = self.args, 0
        demos = self._demonstrations() if args.label_filter != "off" else []
        instruction = self.task.instruction() if args.fewshot == "task" else ""
        texts = [r["text"] for r in rows]
        probs = label_word_logprobs(
            self.model,
            self.tokenizer,
            self.task,
            texts,
            demos,
            calibrate=args.fewshot_calibration,
            instruction=instruction,
        ).exp()
        for r, p in zip(rows, probs):
            r["fewshot_label"] = int(p.argmax())
            r["fewshot_confidence"] = float(p[r["label"]])
        if args.label_filter == "remove":
            before = rows
            rows = [r for r in rows if r["fewshot_label"] == r["label"]]
            _drop(dropped, "label_mismatch", before, rows)
        elif args.label_filter == "relabel":
            for r in rows:
                if r["fewshot_label"] != r["label"]:
                    r["label"], relabelled = r["fewshot_label"], relabelled + 1
        return rows, relabelled

    def _deduplicated_and_cut(self, rows: list[dict], dropped: dict[str, int]) -> list[dict]:
        """Exact, then near duplicates (the better-scored text stays); then top-n per class and balancing."""
        args = self.args
        steps = [
            ("duplicate", filters.exact_duplicates_dropped),
            (
                "near_duplicate",
                lambda r: filters.near_duplicates_dropped(r, args.near_duplicate_threshold, args.minhash_permutations),
            ),
        ]
        if args.top_n:
            steps.append(("over_top_n", lambda r: filters.top_n(r, self.task.num_labels, args.top_n)))
        if args.balance:
            steps.append(("balance", lambda r: filters.balanced(r, self.task.num_labels)))
        for reason, step in steps:
            before = rows
            rows = step(rows)
            _drop(dropped, reason, before, rows, self.class_losses)
        return rows

    def _refuse_empty_classes(self, rows: list[dict]) -> None:
        """A class with no texts left is refused (unless ``allow_empty_classes``; a build left with no
        text at all always is: ``datasets`` cannot save an empty dataset), naming the steps that removed
        its texts and the options that keep them."""
        empty = [c for c in range(self.task.num_labels) if not any(r["label"] == c for r in rows)]
        if not empty or (self.args.allow_empty_classes and rows):  # no text at all: no dataset to write
            return
        given = Counter(r["label"] for r in self.rows)
        problems = []
        for c in empty:
            name = self.task.label_names[c]
            losses = [f"{step} {lost[c]}" for step, lost in self.class_losses.items() if lost[c]]
            if not given[c]:
                problems.append(f"the synthesis output has no texts of class {name!r}")
            else:
                problems.append(f"all {given[c]} texts of class {name!r} were removed ({', '.join(losses)})")
        fixes = {
            "too_short": "--min-words 0",
            "repetitive": "--max-repeat 0",
            "label_mismatch": "--label-filter relabel or off",
            "relabelled": "--label-filter off",
            "near_duplicate": "--near-duplicate-threshold 1.0",
        }
        keep = sorted({fixes[r] for r, lost in self.class_losses.items() if r in fixes and any(lost[c] for c in empty)})
        keep_text = f"Keep more texts ({', '.join(keep)}), make" if keep else "Make"
        anyway = (
            "or pass --allow-empty-classes to build it anyway"
            if rows
            else "(--allow-empty-classes keeps a class empty, not every class)"
        )
        what = "a class empty" if rows else "no text at all"
        raise ValueError(
            f"Building {self.source_dir} would leave {what}: {'; '.join(problems)}. {keep_text} more "
            f"texts (hf-gradmm synthesize ... --per-class N --resume), {anyway}. Nothing was written."
        )

    def _report(self, rows: list[dict], count_in: int, dropped: dict, relabelled: int) -> dict:
        args = self.args
        return {
            "filtering": {
                "in": count_in,
                "dropped": dropped,
                "relabelled": relabelled,
                "out": len(rows),
                "demonstrations": args.fewshot if args.label_filter != "off" else "off",
                "calibrated": args.fewshot_calibration,
            },
            "per_class": self._class_stats(rows),
            # DP: both compare with the real data, so neither is published (the local file keeps the comparison).
            "memorisation": None if self.dp else self.memorisation_summary,
            "real_reference": None if self.dp else self._real_reference(),
            "synthesis": {
                "generator": self.generator,
                "calibration": self.synthesis_metrics.get("calibration"),
                "dp": self.synthesis_metrics.get("dp"),
                "target_checkpoints": self.synthesis_metrics.get("target_checkpoints"),
            },
            "builder_config": asdict(args),
        }

    def _class_stats(self, rows: list[dict]) -> dict:
        out = {}
        for c, name in enumerate(self.task.label_names):
            mine = [r for r in rows if r["label"] == c]
            nll = sum(r["nll"] for r in mine) / len(mine) if mine else None  # None: an allowed empty class
            out[name] = {
                "texts": len(mine),
                "mean_match_distance": sum(r["match_distance"] for r in mine) / len(mine) if mine else None,
                "mean_nll": nll,
                "perplexity": math.exp(nll) if mine else None,
            }
        return out

    def _real_reference(self) -> dict:
        """Mean NLL and perplexity of a seeded sample of real training texts under the same model."""
        train = self.real["train"]
        idx = random.Random(self.args.seed).sample(range(len(train)), min(self.args.real_nll_examples, len(train)))
        nll = mean_text_nll(self.model, self.tokenizer, [train[i]["text"] for i in idx])
        return {"texts": len(idx), "mean_nll": nll, "perplexity": math.exp(nll)}

    def _dataset_dict(self, rows: list[dict]) -> DatasetDict:
        names = list(self.task.label_names)
        features = Features(
            {
                "text": Value("string"),
                "label": ClassLabel(names=names),
                "round": Value("int32"),
                "match_distance": Value("float32"),
                "nll": Value("float32"),
                "score": Value("float32"),
                "fewshot_label": ClassLabel(names=names),
                "fewshot_confidence": Value("float32"),
                "longest_common_ngram": Value("int32"),
                "ngram8_share": Value("float32"),
                "copied": Value("bool"),
            }
        )
        pair = self.task.pair_columns() if self.task.is_pair else ()
        if pair:  # a pair's two segments as the task's (or run_glue.py's) columns, first
            features = Features({pair[0]: Value("string"), pair[1]: Value("string"), **features})

        def row(values: dict) -> dict:
            return {k: values.get(k) for k in features} | dict(zip(pair, split_pair(values["text"]) if pair else ()))

        out = DatasetDict({"train": Dataset.from_list([row(r) for r in rows], features=features)})
        if self.args.include_real_splits:  # same columns (null metrics) so every split loads under one config
            for split in ("validation", "test"):
                if split in self.real:
                    real = [
                        row({"text": t, "label": y})
                        for t, y in zip(self.real[split]["text"], self.real[split]["label"])
                    ]
                    out[split] = Dataset.from_list(real, features=features)
        return out

    # ------------------------------------------------------------------ outputs
    def save(self, output: str | Path | None = None) -> Path:
        """Write the built dataset folder: ``data/`` (``save_to_disk``), ``README.md`` (the card),
        ``gradmm_config.yaml``, ``build_report.json``, ``memorisation.jsonl`` and, per split,
        ``<split>.jsonl`` / ``<split>.csv`` with ``sentence`` and ``label`` (run_glue.py's
        ``--train_file`` layout; a pair task: its two text columns, e.g. ``sentence1``, ``sentence2``)."""
        if self.dataset is None:
            self.build()
        folder = Path(output or self.args.output or self.source_dir / "dataset")
        folder.mkdir(parents=True, exist_ok=True)
        self.dataset.save_to_disk(str(folder / DATA_DIR))
        for split, ds in self.dataset.items():
            if self.task.is_pair:  # run_glue.py reads sentence1/sentence2, else the first two non-label columns
                glue = ds.select_columns([*self.task.pair_columns(), "label"])
            else:
                glue = ds.select_columns(["text", "label"]).rename_column("text", "sentence")
            glue.to_json(str(folder / f"{split}.jsonl"))
            glue.to_csv(str(folder / f"{split}.csv"), index=False)
        config = {
            "synthesis": self.synthesis_config.to_dict(),
            "builder": asdict(self.args),
            "generator": self.generator,
        }
        (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        (folder / BUILD_REPORT).write_text(json.dumps(self.report, indent=2))
        # The figures are shareable; the nearest real texts are the real data itself: a local file only,
        # never pushed (hub.EXTRA_FILES), so a push never publishes a real training example.
        with open(folder / MEMORISATION, "w") as public, open(folder / MEMORISATION_LOCAL, "w") as local:
            for row, text in zip(self.memorisation, self.dataset["train"]["text"]):
                figures = {k: v for k, v in row.items() if k != "nearest_real_text"}
                if not self.dp:  # DP: the pushed file names the texts only
                    public.write(json.dumps({"text": text, **figures}) + "\n")
                local.write(json.dumps({"text": text, **row}) + "\n")
        card = dataset_card(self.report, config, self.task, self.dataset, license=self.args.license)
        card.save(str(folder / "README.md"))
        return folder

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """Save (if not yet saved) and push the dataset, its card and config; returns the repo URL."""
        folder = Path(self.args.output or self.source_dir / "dataset")
        if not (folder / BUILD_REPORT).exists():
            folder = self.save(folder)
        return push_dataset_folder(folder, repo_id, private=private, token=token)


def _drop(
    dropped: dict[str, int], reason: str, before: list[dict], kept: list[dict], by_class: dict | None = None
) -> None:
    """Count the rows a step dropped under ``reason`` (steps that drop none are not listed); with
    ``by_class``, also what each class lost (a relabelling moves texts out of a class)."""
    if len(before) - len(kept):
        dropped[reason] = dropped.get(reason, 0) + len(before) - len(kept)
    if by_class is not None:
        by_class[reason] = Counter(r["label"] for r in before) - Counter(r["label"] for r in kept)
