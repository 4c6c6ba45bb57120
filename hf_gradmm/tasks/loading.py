"""Load a task's data as a ``DatasetDict`` with ``train``/``validation``/``test`` splits.

Every split has two columns: ``text`` (str) and ``label`` (``ClassLabel`` with the task's
class names). Splits the source lacks are carved from its train split, stratified by label,
with a fixed seed, so every run sees the same examples in the same split.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_gradmm.tasks.offline import READERS
from hf_gradmm.tasks.registry import LOCAL, OFFLINE, TaskSpec

SPLIT_SEED = 42  # fixed: the splits are part of the task's definition
HELD_OUT_FRACTION = 0.1  # share of the data carved for validation and for test, each


def _features(spec: TaskSpec) -> Features:
    return Features({"text": Value("string"), "label": ClassLabel(names=list(spec.label_names))})


def _carve(train: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """Split off ``fraction`` of ``train`` (stratified by label), returning (rest, held out)."""
    parts = train.train_test_split(test_size=fraction, seed=SPLIT_SEED, stratify_by_column="label")
    return parts["train"], parts["test"]


def _complete_splits(splits: dict[str, Dataset]) -> DatasetDict:
    """Fill in missing validation/test splits from train."""
    train = splits["train"]
    if "test" not in splits:
        train, splits["test"] = _carve(train, HELD_OUT_FRACTION)
    if "validation" not in splits:
        # Carve the same absolute size as a 10% split of the original train.
        fraction = HELD_OUT_FRACTION / (1 - HELD_OUT_FRACTION) if "test" in splits else HELD_OUT_FRACTION
        train, splits["validation"] = _carve(train, min(fraction, 0.5))
    splits["train"] = train
    return DatasetDict({k: splits[k] for k in ("train", "validation", "test")})


def _label_names_from_data(spec: TaskSpec, feature, values: list) -> TaskSpec:
    """A custom task without --label-names takes them from a ClassLabel or the distinct values."""
    if isinstance(feature, ClassLabel):
        names = tuple(feature.names)
    else:
        values = sorted({v for v in values if v is not None})
        names = tuple(str(v) for v in values)
    if len(names) != len(spec.label_words):
        raise ValueError(
            f"The data has {len(names)} classes {names} but {len(spec.label_words)} label words "
            f"{spec.label_words} were given; give one word per class, in this order."
        )
    return replace(spec, label_names=names, class_descriptions=names, names_from_data=False)


def _normalise(ds: Dataset, spec: TaskSpec, where: str) -> Dataset:
    """Rename to text/label, map string labels to ids, check values, cast to the task features."""
    missing = [c for c in (spec.text_column, spec.label_column) if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{where}: column(s) {missing} not found; available columns: {ds.column_names}. "
            "Name the right ones with --text-column / --label-column."
        )
    feature = ds.features[spec.label_column]
    ds = ds.select_columns([spec.text_column, spec.label_column])
    ds = ds.rename_columns({spec.text_column: "text", spec.label_column: "label"})
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


def _require_hub(repo_id: str) -> None:
    """Fail fast (one request, 10 s timeout) with the fixes when the Hub cannot be reached, instead of
    ``datasets``' minute of retries; skipped in offline mode, where the local cache answers."""
    import datasets
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE:
        return
    try:
        HfApi().dataset_info(repo_id, timeout=10)
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
        full = Dataset.from_pandas(frame, features=_features(spec))
        return _check_not_empty(_complete_splits({"train": full}), spec), spec

    if source == LOCAL:
        where = ", ".join(spec.data_files)
        kwargs = {"delimiter": "\t"} if spec.data_files[0].lower().endswith(".tsv") else {}
        try:
            raw = datasets.load_dataset(_local_builder(spec.data_files[0]), data_files=list(spec.data_files), **kwargs)
        except ValueError as err:  # e.g. a header-only CSV: "corresponds to no data"
            raise ValueError(f"{where}: the dataset is empty or unreadable ({err}).") from err
        mapping = {"train": "train"}
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
        spec = _label_names_from_data(spec, column.features[spec.label_column], column[spec.label_column])
    splits = {out: _normalise(raw[src], spec, f"{where} [{src}]") for out, src in mapping.items()}
    return _check_not_empty(_complete_splits(splits), spec), spec
