"""The LoopbackHub test double, driven only by the real huggingface_hub and datasets clients (``hub`` fixture)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

FEATURES = Features(
    {
        "text": Value("string"),
        "label": ClassLabel(names=["negative", "positive"]),
        "score": Value("float32"),
    }
)
ROWS = {
    "text": ["a dull film", "a fine film", "boring", "moving and sharp", "loved it", "never again"],
    "label": [0, 1, 0, 1, 1, 0],
    "score": [0.25, 0.75, 0.0, 1.0, 0.5, 0.125],
}


def _dataset(rows: dict[str, list] = ROWS) -> Dataset:
    return Dataset.from_dict(rows, features=FEATURES)


def test_whoami_create_repo_and_repo_exists(hub):
    api = HfApi()
    assert api.whoami()["name"] == "someone"
    assert not api.repo_exists("someone/fresh", repo_type="dataset")

    url = api.create_repo("someone/fresh", repo_type="dataset", private=True, exist_ok=True)
    assert url.repo_id == "someone/fresh" and url.endpoint == hub.endpoint
    assert api.create_repo("someone/fresh", repo_type="dataset", exist_ok=True).repo_id == "someone/fresh"
    with pytest.raises(HfHubHTTPError) as error:
        api.create_repo("someone/fresh", repo_type="dataset")
    assert error.value.response.status_code == 409

    assert api.repo_exists("someone/fresh", repo_type="dataset")
    assert api.list_repo_files("someone/fresh", repo_type="dataset") == [".gitattributes"]
    # A private repo is invisible without a token.
    assert not HfApi(token=False).repo_exists("someone/fresh", repo_type="dataset")


def test_dataset_dict_push_then_load_dataset_round_trip(hub, tmp_path):
    pushed = DatasetDict({"train": _dataset()})
    commit = pushed.push_to_hub("someone/reviews", private=True)

    files = hub.repo_files("someone/reviews")
    assert sorted(files) == [".gitattributes", "README.md", "data/train-00000-of-00001.parquet"]
    assert commit.oid == HfApi().dataset_info("someone/reviews").sha
    # The parquet shard went through LFS (batch + upload), the card as a regular file in the commit.
    assert any(method == "PUT" and path.startswith("/loopback-lfs/") for method, path in hub.requests)
    tree = {f.path: f for f in HfApi().list_repo_tree("someone/reviews", recursive=True, repo_type="dataset")}
    assert tree["data/train-00000-of-00001.parquet"].lfs is not None
    assert tree["README.md"].lfs is None

    loaded = load_dataset("someone/reviews", cache_dir=str(tmp_path / "datasets"))
    assert list(loaded) == ["train"]
    assert loaded["train"].features == FEATURES
    assert loaded["train"].features["label"].names == ["negative", "positive"]
    assert loaded["train"].to_dict() == pushed["train"].to_dict()

    parquet = hf_hub_download("someone/reviews", "data/train-00000-of-00001.parquet", repo_type="dataset")
    with open(parquet, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == tree["data/train-00000-of-00001.parquet"].lfs.sha256


def test_dataset_push_twice_replaces_the_data(hub, tmp_path):
    _dataset().push_to_hub("someone/versions")
    second = {name: values[:3] for name, values in ROWS.items()}
    _dataset(second).push_to_hub("someone/versions")  # reads the first README back through HfFileSystem

    commits = HfApi().list_repo_commits("someone/versions", repo_type="dataset")
    assert len(commits) == 3  # initial commit + two pushes
    loaded = load_dataset("someone/versions", split="train", cache_dir=str(tmp_path / "datasets"))
    assert loaded.to_dict() == second
    assert "num_examples: 3" in hub.repo_files("someone/versions")["README.md"].decode()


def test_card_and_yaml_in_one_commit_then_card_push(hub):
    api = HfApi()
    api.create_repo("someone/card", repo_type="dataset", exist_ok=True)
    card = DatasetCard("---\nlicense: mit\ntags:\n- loopback\n---\n\n# A card\n\nSome text.\n")
    settings = b"learning_rate: 0.001\nsteps: 10\n"
    api.create_commit(
        "someone/card",
        operations=[
            CommitOperationAdd("README.md", str(card).encode()),
            CommitOperationAdd("configs/settings.yaml", settings),
        ],
        commit_message="Card and settings",
        repo_type="dataset",
    )
    commits = api.list_repo_commits("someone/card", repo_type="dataset")
    assert [c.title for c in commits] == ["Card and settings", "initial commit"]

    loaded = DatasetCard.load("someone/card")
    assert loaded.data.license == "mit" and loaded.data.tags == ["loopback"]
    assert "Some text." in loaded.text
    path = hf_hub_download("someone/card", "configs/settings.yaml", repo_type="dataset")
    with open(path, "rb") as f:
        assert f.read() == settings
    assert api.dataset_info("someone/card").card_data.license == "mit"

    loaded.data.license = "apache-2.0"
    loaded.push_to_hub("someone/card")
    assert DatasetCard.load("someone/card").data.license == "apache-2.0"
    api.upload_file(path_or_fileobj=b"notes\n", path_in_repo="notes.txt", repo_id="someone/card", repo_type="dataset")
    assert api.list_repo_files("someone/card", repo_type="dataset") == [
        ".gitattributes",
        "README.md",
        "configs/settings.yaml",
        "notes.txt",
    ]


def test_writes_without_a_token_answer_401(hub, monkeypatch):
    anonymous = HfApi(token=False)
    with pytest.raises(HfHubHTTPError) as error:
        anonymous.create_repo("someone/nope", repo_type="dataset", exist_ok=True)
    assert error.value.response.status_code == 401

    HfApi().create_repo("someone/public", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as error:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="someone/public", repo_type="dataset")
    assert error.value.response.status_code == 401
    assert anonymous.list_repo_files("someone/public", repo_type="dataset") == [".gitattributes"]  # reads are open

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as error:
        _dataset().push_to_hub("someone/nope")
    assert error.value.response.status_code == 401
    assert not HfApi().repo_exists("someone/nope", repo_type="dataset")


def test_fail_commits_makes_push_raise(hub):
    hub.fail_commits = True
    with pytest.raises(HfHubHTTPError) as error:
        DatasetDict({"train": _dataset()}).push_to_hub("someone/flaky")
    assert error.value.response.status_code == 500
    assert list(hub.repo_files("someone/flaky")) == [".gitattributes"]

    hub.fail_commits = False
    DatasetDict({"train": _dataset()}).push_to_hub("someone/flaky")
    assert "README.md" in hub.repo_files("someone/flaky")


def test_subprocess_reaches_the_hub_through_the_environment(hub):
    script = textwrap.dedent(
        """
        from huggingface_hub import HfApi, hf_hub_download

        api = HfApi()
        api.create_repo("someone/from-subprocess", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="hello.txt",
                        repo_id="someone/from-subprocess", repo_type="dataset")
        path = hf_hub_download("someone/from-subprocess", "hello.txt", repo_type="dataset")
        print(open(path).read(), api.whoami()["name"])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], env=os.environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hello", "someone"]
    assert hub.repo_files("someone/from-subprocess")["hello.txt"] == b"hello"
