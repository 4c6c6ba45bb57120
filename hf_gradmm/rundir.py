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

import json
import os
import secrets
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


class SynthesisError(RuntimeError):
    """A synthesis that cannot go on; finished rounds stay on disk."""


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: a crash leaves the old file or the new one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fingerprint(args: GradMatchConfig, task, model, real_rows: int) -> dict:
    """What decides which texts a run makes; a resume is refused when it changed."""
    model_config = getattr(model, "config", None)
    return {
        "config": args.fingerprint(),
        "task": {k: v for k, v in asdict(task).items() if k != "data_files"},
        "model": {
            "name_or_path": getattr(model_config, "_name_or_path", ""),
            "model_type": getattr(model_config, "model_type", ""),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "data": {"real_rows": real_rows},
    }


def open_run(folder: Path, expected: dict, resume: bool, record: bool = True) -> list[RoundRecord]:
    """The finished rounds of a resumed run, refusing a changed fingerprint (``expected``) or a
    folder with rounds that is not resumed. ``record``: write the fingerprint of a new run (with
    ``False`` it refuses the same way but writes nothing, for a check before costly set-up work)."""
    rounds_dir, state_path = folder / ROUNDS_DIR, folder / RUN_STATE
    finished = sorted(rounds_dir.glob("round_*.json")) if rounds_dir.exists() else []
    expected = json.loads(json.dumps(expected))  # as it reads back from JSON
    if resume and state_path.exists():
        saved = json.loads(state_path.read_text())
        if saved != expected:
            changed = [
                f"{section}.{key}"
                for section, values in expected.items()
                for key in sorted(set(values) | set(saved.get(section, {})))
                if saved.get(section, {}).get(key) != values.get(key)
            ]
            raise SynthesisError(
                f"Cannot resume {folder}: the configuration changed ({', '.join(changed)}). Resume with the "
                "same settings, or start a new run in another --output-dir."
            )
        return [RoundRecord(**json.loads(p.read_text())) for p in finished]
    if not resume and finished:
        raise SynthesisError(
            f"{folder} already holds {len(finished)} finished round(s). Pass --resume to continue "
            "that run, or choose another --output-dir; nothing was overwritten."
        )
    if record:
        rounds_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(state_path, json.dumps(expected, indent=2))
    return []


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
