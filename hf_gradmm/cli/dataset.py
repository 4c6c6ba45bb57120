"""``hf-gradmm build`` and ``hf-gradmm push``: from a synthesis output to a dataset on the Hub."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from hf_gradmm import rundir
from hf_gradmm.dataset import SyntheticDatasetBuilder, push_dataset_folder
from hf_gradmm.rundir import BUILD_REPORT


@dataclass
class SourceArguments:
    path: str | None = field(
        default=None,
        metadata={"help": "The folder to read (first positional argument): a synthesis output or a built dataset."},
    )


@dataclass
class PushArguments:
    repo_id: str | None = field(default=None, metadata={"help": "Hub dataset repo, e.g. someone/rt-gradmm."})
    private: bool = field(default=False, metadata={"help": "Create the repo private."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the login)."})


def _builder(source: SourceArguments, config):
    if not source.path:
        raise ValueError("Give the synthesis output folder: hf-gradmm build DIR (or --path DIR).")
    return SyntheticDatasetBuilder(source.path, config)


def _locked(path: str | Path):
    """The lock of a folder this command writes into (a synthesis output being built, or a built
    folder); a folder it may only read (e.g. a read-only copy pushed as it is) is not locked."""
    folder = Path(path)
    writable = folder.is_dir() and os.access(folder, os.W_OK)
    return rundir.folder_lock(folder, rundir.command_line()) if writable else nullcontext()


def build(source: SourceArguments, config) -> Path:
    """Filter, score and package a synthesis output; prints where it went and the filtering counts.
    The synthesis folder is locked meanwhile: a build of a folder that a run is still writing is refused."""
    if not source.path:
        raise ValueError("Give the synthesis output folder: hf-gradmm build DIR (or --path DIR).")
    with _locked(source.path):
        builder = _builder(source, config)
        builder.build()
        folder = builder.save()
    _print_build(builder, folder)
    return folder


def _f(x, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _print_build(builder, folder) -> None:
    f, m = builder.report["filtering"], builder.report["memorisation"]
    print(f"built {folder}: {f['in']} texts in, {f['out']} out; dropped {f['dropped'] or 'none'}")
    for name, s in builder.report["per_class"].items():
        distance, nll = _f(s["mean_match_distance"], 4), _f(s["mean_nll"], 3)
        print(f"  {name:<12} {s['texts']:>4} texts  distance {distance}  NLL {nll}")
    r = builder.report["real_reference"]
    if r is None or m is None:  # DP: neither is published (both read real texts)
        print("  real-text NLL and copies: not published (differential privacy; see the local memorisation file)")
    else:
        print(f"  real texts NLL {r['mean_nll']:.3f}; copies flagged: {m['flagged_copies']}")


def push(source: SourceArguments, push_args: PushArguments, config) -> str:
    """Push a built folder (building a synthesis output first) to the Hub."""
    if not push_args.repo_id:
        raise ValueError("Give the target repo: hf-gradmm push DIR --repo-id someone/name.")
    if not source.path:
        raise ValueError("Give the folder to push: hf-gradmm push DIR --repo-id someone/name.")
    folder = Path(source.path)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give a synthesis output or a built dataset folder.")
    with _locked(folder):
        if not (folder / BUILD_REPORT).exists():
            built = Path(config.output or folder / "dataset")
            if (built / BUILD_REPORT).exists():
                folder = built
            else:
                folder = build(source, config)
        url = push_dataset_folder(folder, push_args.repo_id, private=push_args.private, token=push_args.token)
    print(f"pushed {folder} to {url}")
    return url
