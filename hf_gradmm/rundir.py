"""The output folders' contract: file names, the resume fingerprint, atomic writes, the reader.

A synthesis output folder (``--output-dir``) holds::

    rounds/round_0000.json ...  one file per finished round, written the moment it finishes
    run_state.json              the fingerprint of the run (config, task, model, data size)
    dp_state.json               DP only: the secret noise seed (local, never published)
    trajectory/k<K>/            trajectory:K checkpoints (reused by a rerun with the same recipe)
    log_history.jsonl           every log (report_to='jsonl')
    config.yaml, metrics.json   the finished run's configuration and figures
    data-*.arrow, dataset_info.json, state.json   the texts (``Dataset.save_to_disk``)

A built dataset folder (``hf-gradmm build``) holds ``data/`` (``DatasetDict.save_to_disk``),
``README.md`` (the card), ``gradmm_config.yaml``, ``build_report.json``, ``memorisation.jsonl``
(pushed) and ``memorisation_with_real_texts.jsonl`` (names real texts: local only).

The synthesizer writes through these functions and the builder, the evaluation and the Hub
push read through them, so the layout is spelled out in this one file.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import secrets
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import yaml
from datasets import Dataset

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.round import RoundRecord

ROUNDS_DIR = "rounds"
RUN_STATE = "run_state.json"
DP_STATE = "dp_state.json"
TRAJECTORY_DIR = "trajectory"
LOG_HISTORY = "log_history.jsonl"
CONFIG = "config.yaml"
METRICS = "metrics.json"
# The built dataset folder
DATA_DIR = "data"
BUILD_REPORT = "build_report.json"
CONFIG_FILE = "gradmm_config.yaml"
MEMORISATION = "memorisation.jsonl"
MEMORISATION_LOCAL = "memorisation_with_real_texts.jsonl"  # names real training texts: never pushed
LOCK = ".hf_gradmm.lock"  # held (flock) by the one process working in a folder; never pushed
COMMAND_ENV = "HF_GRADMM_COMMAND"  # the command line as typed, set by the CLI (lock file, resume hint)
LOCK_ENV = "HF_GRADMM_LOCKED"  # the folder a launching process holds for the processes it starts
MIN_FREE_BYTES = 200 * 2**20  # round files and the dataset are small; trajectory checkpoints are counted apart


class SynthesisError(RuntimeError):
    """A synthesis that cannot go on; finished rounds stay on disk."""


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, flushed to disk before it replaces
    ``path``: a crash or a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_output_dir(folder: str | Path, flag: str = "--output-dir", needed_bytes: int = MIN_FREE_BYTES) -> None:
    """Refuse an output folder that cannot be used (a file of that name, no write permission, a
    read-only file system, too little free space) before anything is loaded, naming the fix. Nothing
    is created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SynthesisError(f"{flag} {folder} is a file, not a folder. Choose a folder path ({flag} runs/my_run).")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise SynthesisError(f"{flag} {folder}: {existing} is a file, so no folder can be made under it.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" ({existing}, where it would be made)"
        raise SynthesisError(
            f"{flag} {folder} is not writable{where}: no permission or a read-only file system. Choose a folder "
            f"you can write to, e.g. {flag} ~/hf_gradmm_runs/run1."
        )
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise SynthesisError(
            f"{flag} {folder}: only {free / 2**20:.0f} MiB free on its disk, and this run needs about "
            f"{needed_bytes / 2**20:.0f} MiB. Free some space or choose a folder on another disk."
        )


_held: dict[Path, tuple[int, int]] = {}  # folder -> (lock file descriptor, nesting depth) in this process


@contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s exclusive lock for the block, so two runs (or a run and a build or push)
    never write the same folder: a second one is refused at once, naming the process that holds it.
    The lock is an ``flock`` on ``folder/.hf_gradmm.lock``: the system drops it when the holder
    dies (even by SIGKILL), so a stale file never blocks. Re-entrant within a process; processes
    started while it is held (``--num-processes``) inherit it through ``HF_GRADMM_LOCKED``."""
    folder = Path(folder).resolve()
    if folder in _held or os.environ.get(LOCK_ENV) == str(folder):
        fd, depth = _held.get(folder, (-1, 0))
        _held[folder] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held.pop(folder)
            if depth > 1:
                _held[folder] = (fd, depth - 1)
        return
    check_output_dir(folder)
    made = not folder.exists()  # a folder the lock made is removed again if the block leaves it empty
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise SynthesisError(
                f"{folder} is in use by another hf-gradmm process ({holder}). Wait for it to finish or stop it, "
                "then run again (synthesize: with --resume to continue its rounds); or use another folder."
            ) from None
        try:  # the holder before us may have removed the file between our open and our lock: retry
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "command": command, "started": started}).encode())
    _held[folder] = (fd, 1)
    outer = os.environ.get(LOCK_ENV)
    os.environ[LOCK_ENV] = str(folder)
    try:
        yield
    finally:
        _held.pop(folder, None)
        if outer is None:
            os.environ.pop(LOCK_ENV, None)
        else:
            os.environ[LOCK_ENV] = outer
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock
        if made and not any(folder.iterdir()):  # a refusal inside the block leaves no new folder behind
            folder.rmdir()


def _lock_holder(fd: int) -> str:
    """Who holds a lock, from what the holder wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "it is starting"
    return f"pid {info.get('pid')}, {info.get('command')}, since {info.get('started')}"


def command_line() -> str:
    """This process's command line, as a user would type it again."""
    import shlex

    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    name = Path(sys.argv[0]).name if sys.argv else "python"
    return shlex.join(["hf-gradmm" if name in ("hf-gradmm", "__main__.py") else name, *sys.argv[1:]])


def finished_round_count(folder: str | Path) -> int:
    """How many round files of ``folder`` read back whole (the rounds a resume keeps)."""
    return len(_read_rounds(Path(folder) / ROUNDS_DIR)[0])


def unreadable_rounds(folder: str | Path) -> list[str]:
    """One message per round file of ``folder`` that does not read back whole."""
    return _read_rounds(Path(folder) / ROUNDS_DIR)[1]


def _read_rounds(rounds_dir: Path) -> tuple[list[RoundRecord], list[str]]:
    """The round files that read back whole, and a message per file that does not. Such a file
    (cut mid-way by a full disk, or by a copy that was not atomic) counts as unfinished: its round is
    made again and the file replaced when it is; the good rounds are never touched."""
    records, problems = [], []
    for path in sorted(rounds_dir.glob("round_*.json")) if rounds_dir.exists() else []:
        try:
            records.append(RoundRecord(**json.loads(path.read_text())))
        except (ValueError, TypeError, UnicodeDecodeError) as err:
            problems.append(
                f"{path} is unreadable ({type(err).__name__}: {str(err)[:80]}); its round counts as unfinished "
                "and is made again (the file is replaced when it is)."
            )
    return records, problems


def fingerprint(args: GradMatchConfig, task, model, real_rows: int) -> dict:
    """What decides which texts a run makes; a resume is refused when it changed."""
    model_config = getattr(model, "config", None)
    return {
        "config": args.fingerprint(),
        # the files' paths change no text; encoding (added later): None is left out so older folders resume
        "task": {
            k: v
            for k, v in asdict(task).items()
            if k not in ("data_files", "split_files", "custom") and (k != "encoding" or v)
        },
        "model": {
            "name_or_path": getattr(model_config, "_name_or_path", ""),
            "model_type": getattr(model_config, "model_type", ""),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "data": {"real_rows": real_rows},
    }


def _deciding(fingerprint: dict) -> dict:
    """The parts of a fingerprint a resume compares: all, except the name of a custom task (the user's
    --dataset / --train-file: a label that changes no text, and 'custom' or the registered default in
    folders made before it was recorded)."""
    config = fingerprint.get("config", {})
    if not (config.get("dataset") or config.get("train_file")):
        return fingerprint
    return {
        **fingerprint,
        "config": {k: v for k, v in config.items() if k != "task"},
        "task": {k: v for k, v in fingerprint.get("task", {}).items() if k != "name"},
    }


def open_run(folder: Path, expected: dict, resume: bool, record: bool = True) -> list[RoundRecord]:
    """The finished rounds of a resumed run, refusing a changed fingerprint (``expected``) or a
    folder with rounds that is not resumed. ``record``: write the fingerprint of a new run (with
    ``False`` it refuses the same way but writes nothing, for a check before costly set-up work)."""
    rounds_dir, state_path = folder / ROUNDS_DIR, folder / RUN_STATE
    expected = json.loads(json.dumps(expected))  # as it reads back from JSON
    if resume and state_path.exists():
        try:
            saved = json.loads(state_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise SynthesisError(
                f"{state_path} is unreadable, so the rounds in {rounds_dir} cannot be checked against this run's "
                "settings. Start a new run in another --output-dir (copy the round files there only if you know "
                "they were made with the same settings)."
            ) from None
        saved, wanted = _deciding(saved), _deciding(expected)
        if saved != wanted:
            changed = [
                f"{section}.{key}"
                for section, values in wanted.items()
                for key in sorted(set(values) | set(saved.get(section, {})))
                if saved.get(section, {}).get(key) != values.get(key)
            ]
            before = saved.get("config", {})
            flags = [f"--{k.replace('_', '-')} {before[k]}" for k in sorted(before) if f"config.{k}" in changed]
            same = f" (the folder's: {' '.join(flags)}; a default may have changed since)" if flags else ""
            raise SynthesisError(
                f"Cannot resume {folder}: the configuration changed ({', '.join(changed)}). Resume with the "
                f"same settings{same}, or start a new run in another --output-dir."
            )
        records, problems = _read_rounds(rounds_dir)
        for problem in problems:
            warnings.warn(problem, stacklevel=2)
        return records
    check_resumable(folder, resume)
    if record:
        rounds_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(state_path, json.dumps(expected, indent=2))
    return []


def check_resumable(folder: Path, resume: bool) -> None:
    """Refuse a new run (no ``resume``) in a folder that holds finished rounds (a cheap check that
    needs no model: the full fingerprint comparison comes once the model is loaded)."""
    finished = sorted((Path(folder) / ROUNDS_DIR).glob("round_*.json"))
    if not resume and finished:
        raise SynthesisError(
            f"{folder} already holds {len(finished)} finished round(s). Pass --resume to continue "
            "that run, or choose another --output-dir; nothing was overwritten."
        )


def save_round(folder: Path, record: RoundRecord) -> None:
    atomic_write(folder / ROUNDS_DIR / f"round_{record.round:04d}.json", json.dumps(asdict(record), indent=1))


def noise_seed(folder: Path, resume: bool, main: bool) -> int | None:
    """The DP noise seed: a resumed run's own (so it adds the same noise instead of releasing the
    targets a second time), else a new one from the OS's secure randomness, kept in dp_state.json
    (local, never published). Only the main process makes one (None elsewhere: it is shared)."""
    path = folder / DP_STATE
    if resume and path.exists():
        return json.loads(path.read_text())["noise_seed"]
    if not main:
        return None
    seed = secrets.randbits(63)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"noise_seed": seed, "note": "secret: do not publish"}))
    return seed


def write_outputs(folder: Path, dataset: Dataset, config: dict, metrics: dict) -> None:
    """The finished run's texts, configuration and figures."""
    dataset.save_to_disk(str(folder))
    atomic_write(folder / CONFIG, yaml.safe_dump(config, sort_keys=False))
    atomic_write(folder / METRICS, json.dumps(metrics, indent=2))


def read_synthesis_dir(path: str | Path) -> tuple[Dataset, GradMatchConfig, dict]:
    """The rows, config and metrics a finished ``synthesize`` run wrote to ``path``."""
    path = Path(path)
    missing = [name for name in (CONFIG, METRICS, "dataset_info.json") if not (path / name).exists()]
    if missing:
        hint = (
            " It has rounds/ but no final dataset: finish it with 'hf-gradmm synthesize ... --resume'."
            if (path / ROUNDS_DIR).is_dir()
            else ""
        )
        raise ValueError(f"{path} is not a finished hf-gradmm synthesis output (missing {', '.join(missing)}).{hint}")
    raw = yaml.safe_load((path / CONFIG).read_text())
    known = {f.name for f in fields(GradMatchConfig)}
    config = GradMatchConfig(**{k: v for k, v in raw.items() if k in known})
    metrics = json.loads((path / METRICS).read_text())
    return Dataset.load_from_disk(str(path)), config, metrics
