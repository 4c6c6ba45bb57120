"""Golden runs: fixed-seed syntheses whose texts, distances and metrics.json must not change.

Recorded once (``UPDATE_GOLDEN=1 pytest tests/test_golden.py``) and compared on every run, so a
restructuring of the package that changes what a synthesis computes fails here. Five runs on the
tiny random model: a small run, the same run stopped by a callback after one round and resumed, a
DP run (its noise seed fixed through dp_state.json, as a resume reads it), a trajectory run
(theta0 + two LoRA checkpoints) and a run matching a block's linear layers (the general,
double-backward path). The real SmolLM2 (slow) makes the same runs but the DP one, which
tests/test_privacy.py covers on SmolLM2.

Texts and token ids must match exactly; floats to a relative 1e-5 or an absolute 2e-6 (the same
operations on the same machine give the same bits, but a refactoring may legitimately reorder a
sum, and two machines of the same platform key differ: on an AMD EPYC the tiny model's cosine
distances, 1 - cos of float32 values near 1, came out ~6e-7 from the golden ones in every run, a
relative 3e-5 of a distance of 0.02). Timings are not compared. Float results depend on the CPU's
kernels, so a golden file records the platform it was made on; on another platform the test is
skipped with the command that re-records it.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.synthesizer import GradMatchSynthesizer

GOLDEN = Path(__file__).parent / "golden"
TIMING_KEYS = {"seconds", "round_seconds", "x_step_seconds", "target_seconds", "trajectory_seconds"}
NOISE_SEED = 20261201


def _platform() -> dict:
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


class _StopAfterOneRound(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True
        return control


def _settings(small: bool) -> dict:
    return {
        "init": "lm",  # the ADMM round (the goldens predate the selection default)
        "per_class": 4 if small else 2,
        "texts_per_round": 2,
        "outer_steps": 2,
        "inner_steps": 2,
        "refine_steps": 2,
        "projection_beams": 2,
        "topk": 50,
        "seq_len": 6,
        "target_examples": 8,
        "heldout_examples": 2,
        "disable_tqdm": True,
        "report_to": "none",
    }


RUNS = {
    "small": {},
    "resumed": {},
    "dp": {"dp_epsilon": 4.0, "heldout_examples": 0},
    "trajectory": {"target_checkpoints": "theta0,trajectory:2", "trajectory_steps": 2, "trajectory_batch_size": 4},
    "block": {"matched_params": r"model\.layers\.1\.mlp\.", "projection_beams": 1},
}


def _run(name: str, model, tokenizer, data, out: Path, small: bool) -> dict:
    settings = {**_settings(small), **RUNS[name], "output_dir": str(out)}
    if name == "dp":  # the noise seed a resumed DP run reads: the same noise on every run of this test
        out.mkdir(parents=True)
        (out / "dp_state.json").write_text(json.dumps({"noise_seed": NOISE_SEED}))
        settings["resume"] = True
    train = data["train"]
    if name == "resumed":
        first = GradMatchSynthesizer(
            model,
            GradMatchConfig(**settings),
            train_dataset=train,
            processing_class=tokenizer,
            callbacks=[_StopAfterOneRound()],
        )
        first.train()
        assert len(list((out / "rounds").glob("round_*.json"))) == 1
        settings["resume"] = True
    result = GradMatchSynthesizer(model, GradMatchConfig(**settings), train_dataset=train, processing_class=tokenizer)
    result = result.train()
    rounds = [json.loads(p.read_text()) for p in sorted((out / "rounds").glob("round_*.json"))]
    return {
        "texts": [t.text for t in result.texts],
        "rounds": rounds,
        "metrics": json.loads((out / "metrics.json").read_text().replace(str(out), "<output_dir>")),
    }


def _strip_timings(value):
    if isinstance(value, dict):
        return {k: _strip_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip_timings(v) for v in value]
    return value


def _differences(got, want, where: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}: keys {sorted(set(got) ^ set(want))} differ"] if set(got) != set(want) else []
        for key in set(got) & set(want):
            out += _differences(got[key], want[key], f"{where}.{key}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, golden {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _differences(g, w, f"{where}[{i}]")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isnan(want) and math.isnan(got):
            return []
        return [] if math.isclose(got, want, rel_tol=1e-5, abs_tol=2e-6) else [f"{where}: {got!r} != golden {want!r}"]
    return [] if got == want else [f"{where}: {got!r} != golden {want!r}"]


def _skip_on_another_platform(label: str) -> None:
    """Skip before any synthesis runs: on another platform the comparison cannot be made, so the
    runs would cost minutes (SmolLM2's) for nothing."""
    if os.environ.get("UPDATE_GOLDEN"):
        return
    path = GOLDEN / f"{label}.json"
    recorded = json.loads(path.read_text())["platform"]
    if recorded != _platform():
        pytest.skip(
            f"{path.name} was recorded on {recorded}, this is {_platform()}: float kernels differ "
            "between platforms. Re-record it with UPDATE_GOLDEN=1 pytest tests/test_golden.py on a commit known good."
        )


def _check(label: str, runs: dict) -> None:
    path = GOLDEN / f"{label}.json"
    record = {"platform": _platform(), "runs": _strip_timings(runs)}
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return
    golden = json.loads(path.read_text())
    assert sorted(record["runs"]) == sorted(golden["runs"]), f"{label}: these runs, not the golden file's"
    for name, run in record["runs"].items():
        assert run["texts"] == golden["runs"][name]["texts"], f"{label}/{name}: the texts changed"
    problems = _differences(record["runs"], golden["runs"])
    assert not problems, f"{label}: {len(problems)} differences from {path.name}:\n" + "\n".join(problems[:30])


def test_golden_runs_on_the_tiny_model(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    _skip_on_another_platform("tiny")
    data, _ = rotten_tomatoes
    runs = {name: _run(name, tiny_llama, smollm2_tokenizer, data, tmp_path / name, small=True) for name in RUNS}
    assert runs["resumed"]["texts"] == runs["small"]["texts"]  # a resume makes the same texts
    _check("tiny", runs)


@pytest.mark.slow
def test_golden_runs_on_smollm2(smollm2, rotten_tomatoes, tmp_path):
    _skip_on_another_platform("smollm2")
    model, tokenizer = smollm2
    data, _ = rotten_tomatoes
    # The DP run is the tiny model's only: tests/test_privacy.py runs a DP synthesis on SmolLM2.
    runs = {name: _run(name, model, tokenizer, data, tmp_path / name, small=False) for name in RUNS if name != "dp"}
    assert runs["resumed"]["texts"] == runs["small"]["texts"]
    _check("smollm2", runs)
