"""Load a task's data as a ``DatasetDict`` with ``train``/``validation``/``test`` splits.

Every split has two columns: ``text`` (str; a sentence pair's two segments joined by
``PAIR_SEP``) and ``label`` (``ClassLabel`` with the task's class names). Splits the source
lacks are carved from its train split, stratified by label, with a fixed seed, so every run sees
the same examples in the same split.
"""

from __future__ import annotations

import codecs
from dataclasses import replace
from math import ceil
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_gradmm.tasks.offline import READERS
from hf_gradmm.tasks.registry import LOCAL, OFFLINE, PAIR_SEP, TaskSpec, join_pair

SPLIT_SEED = 42  # fixed: the splits are part of the task's definition
HELD_OUT_FRACTION = 0.1  # share of the data carved for validation and for test, each


def _features(spec: TaskSpec) -> Features:
    return Features({"text": Value("string"), "label": ClassLabel(names=list(spec.label_names))})


def _carve(train: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """Split off ``fraction`` of ``train`` (stratified by label), returning (rest, held out)."""
    parts = train.train_test_split(test_size=fraction, seed=SPLIT_SEED, stratify_by_column="label")
    return parts["train"], parts["test"]


def _carves(splits: dict[str, Dataset]) -> list[tuple[str, float]]:
    """The held-out splits to carve from train, in order, with the share of what is left each takes."""
    out = [] if "test" in splits else [("test", HELD_OUT_FRACTION)]
    if "validation" not in splits:  # the same absolute size as a 10% split of the original train
        out.append(("validation", min(HELD_OUT_FRACTION / (1 - HELD_OUT_FRACTION), 0.5)))
    return out


def _carvable(rows: int, classes: int, carves: list[tuple[str, float]]) -> bool:
    """Whether the stratified splitter of ``datasets`` accepts every carve by size: each held-out
    part (``ceil(fraction * rows)``, as it computes) and each rest must hold at least one row per class."""
    for _, fraction in carves:
        held = ceil(fraction * rows)
        if held < classes or rows - held < classes:
            return False
        rows -= held
    return True


def _check_classes(train: Dataset, spec: TaskSpec, where: str, carves: list[tuple[str, float]]) -> None:
    """Refuse, before carving, a train split that has a class without examples (naming the label
    column and what it holds) or too few examples for the stratified held-out ``carves``: the
    splitter would fail with a count that names no class."""
    counts = pd.Series(train["label"], dtype="int64").value_counts()
    found = {spec.label_names[i]: int(counts.get(i, 0)) for i in range(spec.num_labels)}
    empty = [name for name, n in found.items() if n == 0]
    if empty:
        held = {name: n for name, n in found.items() if n}
        raise ValueError(
            f"{where}: class(es) {empty} have no training example; the label column {spec.label_column!r} holds only "
            f"{held} (examples per class). A classifier needs examples of every class: add them, or check "
            "--label-column and --label-names."
        )
    if not carves:
        return
    names = " and ".join(name for name, _ in carves)
    shares = ", then ".join(f"{name} {fraction:.0%}" for name, fraction in carves) + " of what is left"
    need = len(carves) + 1  # the splitter needs 2 per class at every carve, and training keeps one
    small = {name: n for name, n in found.items() if n < need}
    if small:
        raise ValueError(
            f"{where}: class(es) {small} (examples per class) are too small to carve the {names} split(s) from "
            f"the training data ({shares}, stratified by label): each class needs at least {need} examples. "
            f"Add examples of {', '.join(repr(n) for n in small)} to the data."
        )
    rows = len(train)
    if not _carvable(rows, spec.num_labels, carves):
        least = next(n for n in range(rows, 100 * rows + 100) if _carvable(n, spec.num_labels, carves))
        raise ValueError(
            f"{where}: {rows} examples are too few to carve the {names} split(s) ({shares}, stratified by "
            f"label) with room for all {spec.num_labels} classes in each part: give at least {least} examples."
        )


def _complete_splits(splits: dict[str, Dataset]) -> DatasetDict:
    """Fill in missing validation/test splits from train."""
    train = splits["train"]
    for name, fraction in _carves(splits):
        train, splits[name] = _carve(train, fraction)
    splits["train"] = train
    return DatasetDict({k: splits[k] for k in ("train", "validation", "test")})


def _label_names_from_data(spec: TaskSpec, feature, values: list, where: str) -> TaskSpec:
    """A custom task without --label-names takes them from a ClassLabel or the distinct values;
    it needs two classes or more (a one-class "task" would synthesize without any contrast)."""
    if isinstance(feature, ClassLabel):
        names = tuple(feature.names)
    else:
        names = tuple(str(v) for v in sorted({v for v in values if v is not None}))
    if len(names) < 2:
        found = f"one class only, {names[0]!r} ({len(values)} rows)" if names else "no label at all"
        raise ValueError(
            f"{where}: the label column {spec.label_column!r} holds {found}; a classifier needs at least two "
            "classes. Add examples of the other classes, or name the column that holds the labels with "
            "--label-column."
        )
    if len(names) != len(spec.label_words):
        raise ValueError(
            f"{where}: the data has {len(names)} classes {names} but {len(spec.label_words)} label words "
            f"{spec.label_words} were given; give one word per class, in this order."
        )
    if spec.class_descriptions and len(spec.class_descriptions) != len(names):
        raise ValueError(
            f"{where}: the data has {len(names)} classes {names} but --class-descriptions gives "
            f"{len(spec.class_descriptions)} {spec.class_descriptions}; give one per class, in this order."
        )
    return replace(spec, label_names=names, class_descriptions=spec.class_descriptions or names, names_from_data=False)


def _normalise(ds: Dataset, spec: TaskSpec, where: str) -> Dataset:
    """Rename to text/label, map string labels to ids, check values, cast to the task features."""
    texts = [spec.text_column] + ([spec.text2_column] if spec.is_pair else [])
    missing = [c for c in (*texts, spec.label_column) if c not in ds.column_names]
    if missing:
        pair = " (a pair: --text-column first,second)" if spec.is_pair else ""
        raise ValueError(
            f"{where}: column(s) {missing} not found; available columns: {ds.column_names}. "
            f"Name the right ones with --text-column{pair} / --label-column."
        )
    feature = ds.features[spec.label_column]
    if spec.is_pair:
        ds = ds.map(lambda row: {"_joined": _joined(row, spec, where)}, remove_columns=None)
        texts = ["_joined"]
    ds = ds.select_columns([texts[0], spec.label_column])
    ds = ds.rename_columns({texts[0]: "text", spec.label_column: "label"})
    labels = ds["label"]
    if isinstance(feature, ClassLabel) or all(isinstance(v, (int, type(None))) for v in labels):
        ids = [None if v is None or v < 0 else int(v) for v in labels]  # -1: hidden test label
    else:
        index = {name: i for i, name in enumerate(spec.label_names)}
        unknown = sorted({str(v) for v in labels} - set(index))
        if unknown:
            raise ValueError(
                f"{where}: label values {unknown[:10]} are not among the class names "
                f"{list(spec.label_names)}; pass --label-names in label-word order."
            )
        ids = [index[str(v)] for v in labels]
    bad = sorted({i for i in ids if i is not None and not 0 <= i < spec.num_labels})
    if bad:
        raise ValueError(f"{where}: label ids {bad} out of range for {spec.num_labels} classes.")
    frame = pd.DataFrame({"text": ds["text"], "label": ids})
    frame = frame.dropna()
    frame = frame[frame["text"].astype(str).str.strip().str.len() > 0]
    frame["label"] = frame["label"].astype(int)
    return Dataset.from_pandas(frame.reset_index(drop=True), features=_features(spec))


def _joined(row: dict, spec: TaskSpec, where: str) -> str | None:
    """A pair's two segments as one string (None, dropped later, when either is missing or empty)."""
    first, second = row[spec.text_column], row[spec.text2_column]
    if first is None or second is None or not str(first).strip() or not str(second).strip():
        return None
    if any(PAIR_SEP.strip() in str(t) for t in (first, second)):
        raise ValueError(
            f"{where}: a text holds {PAIR_SEP.strip()!r}, which hf_gradmm uses to join a pair's two segments "
            f"(first such text: {str(first if PAIR_SEP.strip() in str(first) else second)[:80]!r}). Replace it in "
            "the data (e.g. with '|')."
        )
    return join_pair(str(first), str(second))


def _check_not_empty(data: DatasetDict, spec: TaskSpec) -> DatasetDict:
    for split, ds in data.items():
        if len(ds) == 0:
            raise ValueError(f"Task {spec.name!r}: split {split!r} is empty after loading and cleaning.")
    counts = pd.Series(data["train"]["label"]).value_counts()
    empty = [spec.label_names[i] for i in range(spec.num_labels) if counts.get(i, 0) == 0]
    if empty:
        raise ValueError(f"Task {spec.name!r}: class(es) {empty} have no training example.")
    return data


def _local_builder(path: str) -> str:
    suffix = Path(path).suffix.lower()
    builders = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if suffix not in builders:
        raise ValueError(f"Unsupported data file {path!r}: use .csv, .tsv, .json, .jsonl or .parquet.")
    return builders[suffix]


_HEADER = "a header row naming the columns, then one row per example"
_VALID_FILE = {  # what a valid file of each kind looks like, for the refusals
    ".csv": f"{_HEADER}, e.g.\n  text,label\n  A warm and funny film,positive",
    ".tsv": f"{_HEADER}, tab-separated, e.g.\n  text\tlabel\n  A warm and funny film\tpositive",
    ".json": 'one JSON object per example, e.g. [{"text": "A warm and funny film", "label": "positive"}]',
    ".jsonl": 'one JSON object per line, e.g. {"text": "A warm and funny film", "label": "positive"}',
    ".parquet": "a table with a text column and a label column",
}


def _empty_file(path: str, size: int) -> ValueError:
    what = "0 bytes" if size == 0 else f"{size} bytes, all whitespace"
    return ValueError(
        f"{path} is empty ({what}). A data file needs {_VALID_FILE[Path(path).suffix.lower()]}\n"
        "(other column names: say which with --text-column / --label-column)."
    )


def _undecodable(path: str, encoding: str, at: int) -> ValueError:
    """The error for the first byte of ``path`` that ``encoding`` cannot decode, at offset ``at``."""
    with open(path, "rb") as fh:
        head = fh.read(max(at + 1, 2))  # up to and including the bad byte (and a byte-order mark)
    line, start = head.count(b"\n", 0, at) + 1, head.rfind(b"\n", 0, at) + 1
    utf16 = head[:2] in (b"\xff\xfe", b"\xfe\xff")  # a UTF-16 byte-order mark
    fix = "--encoding utf-16" if utf16 else "--encoding latin-1 (or --encoding cp1252 for files saved on Windows)"
    return ValueError(
        f"{path} is not valid {encoding} text: byte 0x{head[at]:02x} at offset {at} (line {line}, byte "
        f"{at - start + 1} of the line) cannot be decoded. If the file was saved in another encoding, name it, "
        f"e.g. {fix}; or re-save the file as UTF-8."
    )


def _check_file(path: str, encoding: str | None) -> None:
    """Refuse an empty file, or a text file (CSV/TSV/JSON) that ``encoding`` (default UTF-8) cannot
    decode, before ``datasets`` reads it: it would fail with a long DatasetGenerationError naming
    neither. One streamed pass, so a large file costs a read and no memory."""
    size = Path(path).stat().st_size
    if size == 0:
        raise _empty_file(path, 0)
    if _local_builder(path) == "parquet":
        return
    encoding = encoding or "utf-8"
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, blank = 0, True
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            pending = len(decoder.getstate()[0])  # bytes of an unfinished character from the last chunk
            try:
                blank = not decoder.decode(chunk, final=not chunk).strip() and blank
            except UnicodeDecodeError as err:
                raise _undecodable(path, encoding, offset - pending + err.start) from None
            if not chunk:
                break
            offset += len(chunk)
    if blank:
        raise _empty_file(path, size)


def _read_local(files: tuple[str, ...], encoding: str | None, where: str) -> Dataset:
    """The ``datasets`` read of one split's local ``files`` (one format), each checked first; a failure
    names the file."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    for path in files:
        _check_file(path, encoding)
    builders = {_local_builder(path) for path in files}
    if len(builders) > 1:
        raise ValueError(f"{where}: the files of one split must share a format; got {sorted(builders)}.")
    builder = builders.pop()
    kwargs = {"delimiter": "\t"} if files[0].lower().endswith(".tsv") else {}
    if encoding and builder != "parquet":
        kwargs["encoding"] = encoding
    try:
        return datasets.load_dataset(builder, data_files=list(files), split="train", **kwargs)
    except DatasetGenerationError as err:  # e.g. a row with more fields than the header
        cause = err.__cause__ or err
        quote = " (in quotes where a text holds the delimiter)" if builder == "csv" else ""
        raise ValueError(
            f"{where}: could not be read as {builder.upper()} ({type(cause).__name__}: {str(cause).strip()}). "
            f"A valid file has {_VALID_FILE[Path(files[0]).suffix.lower()]}{quote}"
        ) from err
    except ValueError as err:  # e.g. a header-only CSV: "corresponds to no data"
        if "corresponds to no data" in str(err):
            valid = _VALID_FILE[Path(files[0]).suffix.lower()]
            raise ValueError(f"{where}: no examples, only a header row. A data file needs {valid}") from None
        raise ValueError(f"{where}: the dataset is empty or unreadable ({err}).") from err


def _require_hub(repo_id: str) -> None:
    """Fail fast (one request, 10 s timeout) with the fixes when the Hub cannot be reached, instead of
    ``datasets``' minute of retries; skipped in offline mode, where the local cache answers."""
    import datasets
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE:
        return
    try:
        HfApi().dataset_info(repo_id, timeout=10)
    except GatedRepoError:
        return  # it exists; datasets says how to ask for access
    except RepositoryNotFoundError:
        raise ValueError(
            f"Hub dataset {repo_id!r} was not found at {constants.ENDPOINT} (or it is private: log in with "
            "`hf auth login` or set HF_TOKEN). Check the id, or pass your own file with --dataset my.csv."
        ) from None
    except HfHubHTTPError:
        return  # the Hub answered: datasets reports anything else in detail
    except Exception as err:  # noqa: BLE001 - DNS, refused connection, timeout: all mean "unreachable"
        raise ConnectionError(
            f"Cannot reach the Hub at {constants.ENDPOINT} to load the dataset {repo_id!r} ({type(err).__name__}). "
            "Fixes: connect to the network, or set HF_ENDPOINT to a reachable mirror; set HF_HUB_OFFLINE=1 if the "
            "dataset is already in your datasets cache; or use a task that ships offline (rotten_tomatoes, "
            "tweet_sentiment) or your own file (--dataset my.csv)."
        ) from None


def load_task(spec: TaskSpec, source: str | None = None) -> tuple[DatasetDict, TaskSpec]:
    """Load ``spec``'s data from ``source`` (default: the task's default source).

    Returns the splits and the task spec (a custom task's class names filled in from the data).
    """
    import datasets

    source = source or spec.default_source
    if source not in spec.sources():
        raise ValueError(
            f"Task {spec.name!r} cannot be loaded from {source!r}; its sources are: "
            f"{', '.join(spec.sources()) or 'none'}."
        )
    if source == OFFLINE:
        frame = READERS[spec.offline]()
        splits = {"train": Dataset.from_pandas(frame, features=_features(spec))}
        _check_classes(splits["train"], spec, f"Task {spec.name!r} (offline corpus)", _carves(splits))
        return _check_not_empty(_complete_splits(splits), spec), spec

    if source == LOCAL:
        files = {"train": spec.data_files, **spec.split_files}
        where = ", ".join(spec.data_files)
        raw = {split: _read_local(paths, spec.encoding, ", ".join(paths)) for split, paths in files.items()}
        mapping = {split: split for split in raw}
    else:
        where = f"Hub dataset {spec.hub_id}" + (f" ({spec.hub_config})" if spec.hub_config else "")
        _require_hub(spec.hub_id)
        raw = datasets.load_dataset(spec.hub_id, spec.hub_config)
        mapping = spec.hub_splits or {s: s for s in ("train", "validation", "test") if s in raw}
    if "train" not in mapping or mapping["train"] not in raw:
        raise ValueError(f"{where}: no train split (found {list(raw)}).")
    if spec.names_from_data:
        column = raw[mapping["train"]]
        if spec.label_column not in column.column_names:
            raise ValueError(
                f"{where}: column {spec.label_column!r} not found; available columns: "
                f"{column.column_names}. Name it with --label-column."
            )
        spec = _label_names_from_data(spec, column.features[spec.label_column], column[spec.label_column], where)
    names = {split: ", ".join(paths) for split, paths in spec.split_files.items()} if source == LOCAL else {}
    splits = {out: _normalise(raw[src], spec, names.get(out) or f"{where} [{src}]") for out, src in mapping.items()}
    _check_classes(splits["train"], spec, f"{where} [{mapping['train']}]", _carves(splits))
    return _check_not_empty(_complete_splits(splits), spec), spec
