"""Argument dataclasses shared by the CLI subcommands (parsed by ``trl.TrlParser``).

Each field is a flag (``--text-column`` or ``--text_column``) and a YAML key
(``--config run.yaml``); flags given on the command line override the YAML file.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Literal, get_args, get_origin, get_type_hints

from hf_gradmm.models import DEFAULT_MODEL
from hf_gradmm.tasks import DEFAULT_TASK, TaskSpec, resolve_task
from hf_gradmm.tasks.registry import did_you_mean


def check_choices(args) -> None:
    """Refuse a value outside its ``Literal[...]`` field type, naming the allowed ones (the CLI's
    parser checks the same choices; this covers configs built in Python)."""
    hints = get_type_hints(type(args))
    for f in fields(args):
        hint = hints.get(f.name)
        if get_origin(hint) is Literal and getattr(args, f.name) not in get_args(hint):
            raise ValueError(f"{f.name}={getattr(args, f.name)!r} is not one of {get_args(hint)}.")


SEED_MAX = 2**32 - 1  # seeds reach NumPy through the Trainer (transformers.set_seed), which takes [0, 2**32 - 1]


def check_number(
    args,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    note: str = "",
) -> None:
    """Refuse the numeric field ``name`` of the dataclass ``args`` unless it is a number of the field's
    type (an ``int`` field takes integers only), finite, and in its range (``low``/``high`` included
    unless ``low_open``/``high_open``). The message names the flag and the field, the range and the
    value given: ``--lr (lr) must be a finite number > 0; got nan.`` The CLI's parser checks only the
    type, and not that of YAML values or of configs built in Python; this runs in ``__post_init__``,
    before any model or data is loaded."""
    value = getattr(args, name)
    integer = next(f.type for f in fields(args) if f.name == name) in (int, "int")  # parsers resolve the hint
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and (integer or math.isfinite(value))
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if ok:
        return
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low}"
    else:
        bounds = "" if high is None else f" {'<' if high_open else '<='} {high}"
    what = "an integer" if integer else "a finite number"
    flag = "--" + name.replace("_", "-")
    text = " (a string: YAML reads 1e-3 as one, write 1.0e-3)" if isinstance(value, str) else ""
    raise ValueError(f"{flag} ({name}) must be {what}{bounds}{f' ({note})' if note else ''}; got {value!r}{text}.")


# pip package of each transformers reporting integration whose name is not its package's
INTEGRATION_PACKAGES = {"azure_ml": "azureml-core", "comet_ml": "comet_ml", "dvclive": "dvclive", "kubeflow": "kfp"}


def report_targets(value: str, flag: str = "--report-to", ours: tuple[str, ...] = ("jsonl",)) -> list[str]:
    """``report_to`` as a list: comma-separated names of ``TrainingArguments.report_to`` (transformers'
    reporting integrations: tensorboard, wandb, mlflow, trackio, ...; ``all``: every installed one;
    ``none``) and of ``ours`` (``jsonl``). Refuses an unknown name (with the known ones) and an
    integration whose package is missing (with the pip command), before any work."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [n.strip() for n in str(value).split(",") if n.strip()] or ["none"]
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"{flag} {value!r}: 'none' cannot be combined with other names.")
        return []
    available = get_available_reporting_integrations()
    names = [m for n in names for m in ([*ours, *available] if n == "all" else [n])]
    known = (*ours, *INTEGRATION_TO_CALLBACK, "all", "none")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"{flag} {unknown[0]!r} is not a reporting target.{did_you_mean(unknown[0], known)} Known: "
            f"{', '.join(known)} (comma-separated for several, e.g. jsonl,tensorboard)."
        )
    missing = [n for n in names if n not in ours and n != "flyte" and n not in available]
    if missing:
        packages = " ".join(INTEGRATION_PACKAGES.get(n, n) for n in missing)
        raise ValueError(
            f"{flag} {','.join(missing)}: the package is not installed. Install it with `pip install {packages}`"
            + (" (or `pip install 'hf-gradmm[tensorboard]'`)" if "tensorboard" in missing else "")
            + f", or leave it out of {flag}."
        )
    return list(dict.fromkeys(names))


@dataclass
class TaskArguments:
    """Which labelled data to use and how to prompt it."""

    task: str = field(
        default=DEFAULT_TASK,
        metadata={
            "help": "Registered task: rotten_tomatoes, tweet_sentiment (both offline), sst2, emotion, "
            "imdb, ag_news (Hub). With --dataset / --train-file it is set to your task's name (--task-name)."
        },
    )
    task_source: str | None = field(
        default=None,
        metadata={
            "help": "Where a registered task's data comes from: 'offline' (embedded corpus) or 'hub'. "
            "Default: the task's own default (offline for rotten_tomatoes and tweet_sentiment)."
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Your own data: a Hub dataset id or a local .csv/.tsv/.json/.jsonl/.parquet file (its validation "
            "and test splits are carved from it; for files of your own per split use --train-file)."
        },
    )
    train_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "Your own training split: one or several local .csv/.tsv/.json/.jsonl/.parquet files (as "
            "run_glue.py's --train_file; YAML: a path or a list). With --validation-file / --test-file those splits "
            "are yours; a split without files is carved from the training data (10 percent, stratified, fixed seed)."
        },
    )
    validation_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "Your own validation split, one or several files (the harness's dev choice, --real-split "
            "validation). Needs --train-file."
        },
    )
    test_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "Your own test split, one or several files: read only by `hf-gradmm evaluate`, once per run; "
            "it never reaches the targets, the held-out texts or the dev choice. Needs --train-file."
        },
    )
    task_name: str | None = field(
        default=None,
        metadata={
            "help": "Name of your own task (--dataset / --train-file), recorded in run_state.json, config.yaml, "
            "the dataset card and results. Default: the training file's name without its suffix (or the Hub id's "
            "last part)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the text (default 'text'); a sentence pair's two columns, comma-separated "
            "(e.g. sentence1,sentence2)."
        },
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Column holding the label, int ids or class names (default 'label')."}
    )
    label_words: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated label word per class, in label-id order (e.g. 'bad,great'); each must "
            "be one token after a space for the model's tokenizer. Overrides a registered task's words."
        },
    )
    label_names: str | None = field(
        default=None,
        metadata={"help": "Comma-separated class names for your own data (default: taken from the data)."},
    )
    template: str | None = field(
        default=None,
        metadata={
            "help": "Prompt with a {text} slot (a sentence pair: {text1} then {text2}); the label word is predicted "
            "right after it."
        },
    )
    domain: str | None = field(
        default=None,
        metadata={
            "help": "What one example is, in plain words (e.g. 'support ticket'; default: the task's, 'text' for "
            "your own data). Used by the class-naming prefix ('Here is a {description} {domain}:') that keeps the "
            "projection and the LM init on topic, by the model's own samples and by the builder's label filter."
        },
    )
    class_descriptions: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated plain-words description per class, in label order (e.g. 'angry,satisfied'; "
            "default: the task's, or the class names for your own data). Used where --domain is."
        },
    )
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Text encoding of your own --dataset .csv/.tsv/.json/.jsonl file, e.g. latin-1 or cp1252 "
            "(default utf-8). A file that does not decode is refused with the offset of its first bad byte."
        },
    )

    def __post_init__(self) -> None:
        for name in ("train_file", "validation_file", "test_file"):  # a YAML string is one path
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        spec = self.to_task()  # an unknown task or bad task options: refused when parsed, before any model loads
        if spec.custom:
            self.task = spec.name  # the custom task's own name, not the registered default, in the run's config

    def to_task(self) -> TaskSpec:
        """The task these arguments describe (errors name the problem and the fix)."""
        return resolve_task(
            self.task,
            dataset=self.dataset,
            dataset_config=self.dataset_config,
            text_column=self.text_column,
            label_column=self.label_column,
            label_words=self.label_words,
            label_names=self.label_names,
            template=self.template,
            source=self.task_source,
            encoding=self.encoding,
            train_files=self.train_file,
            validation_files=self.validation_file,
            test_files=self.test_file,
            domain=self.domain,
            class_descriptions=self.class_descriptions,
            task_name=self.task_name,
        )


@dataclass
class ModelArguments:
    """Which causal LM to use."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Registered model (smollm2-135m, gemma3-270m), a Hub model id or a local folder."},
    )
