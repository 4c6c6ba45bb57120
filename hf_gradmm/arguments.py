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


@dataclass
class TaskArguments:
    """Which labelled data to use and how to prompt it."""

    task: str = field(
        default=DEFAULT_TASK,
        metadata={
            "help": "Registered task: rotten_tomatoes, tweet_sentiment (both offline), sst2, emotion, "
            "imdb, ag_news (Hub). Ignored when --dataset is given, except as the custom task's name."
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
        metadata={"help": "Your own data: a Hub dataset id or a local .csv/.tsv/.json/.jsonl/.parquet file."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    text_column: str | None = field(default=None, metadata={"help": "Column holding the text (default 'text')."})
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
        metadata={"help": "Prompt with a {text} slot; the label word is predicted right after it."},
    )
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Text encoding of your own --dataset .csv/.tsv/.json/.jsonl file, e.g. latin-1 or cp1252 "
            "(default utf-8). A file that does not decode is refused with the offset of its first bad byte."
        },
    )

    def __post_init__(self) -> None:
        self.to_task()  # an unknown task or bad task options: refused when parsed, before any model loads

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
        )


@dataclass
class ModelArguments:
    """Which causal LM to use."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Registered model (smollm2-135m, gemma3-270m), a Hub model id or a local folder."},
    )
