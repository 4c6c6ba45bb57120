"""Argument dataclasses shared by the CLI subcommands (parsed by ``trl.TrlParser``).

Each field is a flag (``--text-column`` or ``--text_column``) and a YAML key
(``--config run.yaml``); flags given on the command line override the YAML file.
"""

from __future__ import annotations

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
        )


@dataclass
class ModelArguments:
    """Which causal LM to use."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Registered model (smollm2-135m, gemma3-270m), a Hub model id or a local folder."},
    )
