"""Pushing a built dataset folder to the Hub through ``datasets`` and ``huggingface_hub``.

Both libraries honour ``HF_ENDPOINT``, so the same code pushes to huggingface.co or to any
Hub-compatible server. Nothing local is changed by a push: a failed push leaves the folder as
it was, and pushing again is safe.
"""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict
from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi, constants, get_token
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from hf_gradmm.rundir import BUILD_REPORT, CONFIG_FILE, DATA_DIR, MEMORISATION

EXTRA_FILES = (CONFIG_FILE, BUILD_REPORT, MEMORISATION)  # never MEMORISATION_LOCAL: it names real texts


class HubPushError(RuntimeError):
    """A push that could not be done; the message names the cause and the fix."""


def _schema(features_yaml) -> dict[str, object]:
    return {f["name"]: f.get("dtype") for f in features_yaml or []}


def _remote_schema(api: HfApi, repo_id: str, token: str) -> dict[str, object] | None:
    """Column -> dtype of the default config of an existing dataset repo; None when it has none."""
    if not api.repo_exists(repo_id, repo_type="dataset", token=token):
        return None
    try:
        card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    info = card.data.to_dict().get("dataset_info")
    if isinstance(info, list):
        info = next((i for i in info if i.get("config_name", "default") == "default"), None)
    return _schema(info.get("features")) if info else None


def _merged_card(repo_id: str, token: str, local_card: Path) -> str:
    """Our card with the metadata ``push_to_hub`` wrote (dataset_info, configs) kept, so that
    ``load_dataset`` still finds the splits and features."""
    ours = DatasetCard.load(local_card)
    remote = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    merged = {**remote.data.to_dict(), **{k: v for k, v in ours.data.to_dict().items() if v is not None}}
    return f"---\n{DatasetCardData(**merged).to_yaml()}\n---\n{ours.text}"


def push_dataset_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Push a folder written by :meth:`SyntheticDatasetBuilder.save`: the DatasetDict, then the
    card (README.md) with the config, build report and memorisation report. Returns the URL."""
    folder = Path(folder)
    if not (folder / BUILD_REPORT).exists() or not (folder / DATA_DIR).is_dir():
        raise HubPushError(
            f"{folder} is not a built dataset folder (no {BUILD_REPORT} or {DATA_DIR}/). Build it with "
            "'hf-gradmm build SYNTHESIS_DIR', or push a synthesis output folder and it is built first."
        )
    token = token or get_token()
    endpoint = constants.ENDPOINT
    if not token:
        raise HubPushError(
            f"No Hub token: log in with 'hf auth login', set HF_TOKEN, or pass --token. Nothing was pushed; the "
            f"dataset stays in {folder}."
        )
    dataset = DatasetDict.load_from_disk(str(folder / DATA_DIR))
    api = HfApi(endpoint=endpoint, token=token)
    ours = _schema(dataset["train"].features._to_yaml_list())
    try:
        theirs = _remote_schema(api, repo_id, token)
        if theirs is not None and theirs != ours:
            raise HubPushError(
                f"The dataset repo {repo_id} at {endpoint} already holds data with other columns: {theirs}; this "
                f"dataset has {ours}. Push to another --repo-id, or delete that repo first. Nothing was pushed."
            )
        dataset.push_to_hub(repo_id, private=private, token=token, commit_message="hf_gradmm: synthetic dataset")
        card = _merged_card(repo_id, token, folder / "README.md")
        operations = [CommitOperationAdd("README.md", card.encode())]
        operations += [CommitOperationAdd(name, str(folder / name)) for name in EXTRA_FILES if (folder / name).exists()]
        api.create_commit(
            repo_id,
            operations,
            commit_message="hf_gradmm: dataset card, config and reports",
            repo_type="dataset",
            token=token,
        )
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            raise HubPushError(
                f"The Hub at {endpoint} refused the token (HTTP {status}) for {repo_id}: use a token with write "
                f"access ('hf auth login' or HF_TOKEN) to that namespace. The dataset stays in {folder}."
            ) from err
        raise HubPushError(f"Push of {repo_id} to {endpoint} failed: {err}. The dataset stays in {folder}.") from err
    except HubPushError:
        raise
    except Exception as err:  # connection errors come from httpx/requests/urllib3 depending on the path
        if _is_connection_error(err):
            raise HubPushError(
                f"Cannot reach the Hub at {endpoint} ({type(err).__name__}: {err}). Check the network, or set "
                f"HF_ENDPOINT to a reachable Hub. Nothing local was changed: the dataset stays in {folder}."
            ) from err
        raise
    return f"{endpoint}/datasets/{repo_id}"


def _is_connection_error(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it) is a failure to reach the server. The HTTP clients under
    ``huggingface_hub`` and ``datasets`` raise their own classes (ConnectError, ConnectionError,
    timeouts); the builtin ``ConnectionError`` covers a refused socket."""
    names = {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "MaxRetryError", "NetworkError"}
    while err is not None:
        if isinstance(err, (ConnectionError, TimeoutError)) or type(err).__name__ in names:
            return True
        err = err.__cause__ or err.__context__
    return False
