"""Tasks: what to load, how to prompt it, and one label word per class."""

from hf_gradmm.tasks.loading import load_task
from hf_gradmm.tasks.offline import CorpusNotInstalledError
from hf_gradmm.tasks.registry import (
    DEFAULT_PREFIX,
    DEFAULT_TASK,
    HUB,
    LOCAL,
    OFFLINE,
    PAIR_SEP,
    TASKS,
    TaskSpec,
    get_task,
    join_pair,
    label_token_ids,
    resolve_task,
    split_pair,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TASK",
    "HUB",
    "LOCAL",
    "OFFLINE",
    "PAIR_SEP",
    "TASKS",
    "CorpusNotInstalledError",
    "TaskSpec",
    "get_task",
    "join_pair",
    "label_token_ids",
    "load_task",
    "resolve_task",
    "split_pair",
]
