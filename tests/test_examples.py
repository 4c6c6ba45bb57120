"""Every example script: the offline ones run end to end with --quick; the Hub ones fail fast and clearly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Longest first (pairs ~90 s, tweets ~85 s, the two others ~55-60 s alone): the end-to-end test runs
# them two at a time in this order, so the short ones fill in after the long ones.
OFFLINE = ["rotten_tomatoes_pairs", "tweet_sentiment", "rotten_tomatoes", "custom_csv"]
HUB = ["sst2", "emotion", "imdb", "ag_news", "cola", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli"]


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{script}.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


def test_every_task_has_a_script_and_a_config():
    for name in OFFLINE + HUB:
        assert (EXAMPLES / f"{name}.py").exists() and (EXAMPLES / "configs" / f"{name}.yaml").exists()


@pytest.mark.slow
def test_every_offline_example_runs_end_to_end_quick(tmp_path):
    """Synthesize -> build -> fine-tune and evaluate on the real SmolLM2 and real data, tiny budget,
    for each offline script. Two at a time with one thread each: one after another they took four
    minutes of the suite with a core idle a quarter of the time."""

    def attempt(script: str) -> subprocess.CompletedProcess:
        return _run(script, "--quick", "--output-dir", str(tmp_path / script), env={"OMP_NUM_THREADS": "1"})

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(OFFLINE, pool.map(attempt, OFFLINE)))
    for script, proc in results.items():
        out = tmp_path / script
        assert proc.returncode == 0, (script, proc.stderr[-3000:])
        summary = json.loads((out / "summary.json").read_text())
        assert summary["built_texts"] >= 1 and summary["synthetic_texts"] >= summary["built_texts"], script
        accuracy = summary["transfer"]["smollm2-135m"]["test_accuracy"]
        assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0, script
        assert (out / "dataset" / "README.md").exists() and (out / "synthesis" / "metrics.json").exists(), script


def test_every_hub_example_fails_fast_and_clearly_without_the_hub(tmp_path):
    """Each of the eleven Hub scripts exits non-zero within a minute, names the Hub and
    HF_ENDPOINT, prints no traceback and starts nothing. Three at a time: each one's time is its
    imports, and one after another they took 70 s of the suite."""
    with socket.socket() as s:  # a port nothing listens on: the Hub is unreachable
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}

    def attempt(script: str) -> tuple[subprocess.CompletedProcess, float]:
        start = time.perf_counter()
        proc = _run(script, "--quick", "--output-dir", str(tmp_path / script), env=env)
        return proc, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(HUB, pool.map(attempt, HUB)))
    for script, (proc, seconds) in results.items():
        assert proc.returncode != 0, script
        assert "Cannot reach the Hub" in proc.stderr and "HF_ENDPOINT" in proc.stderr, (script, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (script, proc.stderr[-2000:])
        assert seconds < 60, (script, seconds)
        assert not (tmp_path / script / "synthesis").exists(), script  # nothing started


def test_dp_signal_scores_runs_against_the_clean_targets(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    """examples/dp_signal.py: a non-DP run's distances to the clean targets are its own final
    distances (its targets are the clean ones); a DP run gets a distance to every class's target."""
    from hf_gradmm.config import GradMatchConfig
    from hf_gradmm.models import load_model_and_tokenizer
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    folder = tmp_path / "model"
    tiny_llama.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    model, tok = load_model_and_tokenizer(str(folder))
    common = dict(init="lm", per_class=2, texts_per_round=2, seq_len=5, outer_steps=1, inner_steps=2, topk=20)
    common.update(refine_steps=1)
    common.update(target_examples=8, heldout_examples=0, disable_tqdm=True)
    for name, extra in (("nodp", {}), ("dp", {"dp_epsilon": 4.0})):
        args = GradMatchConfig(output_dir=str(tmp_path / name), **common, **extra)
        GradMatchSynthesizer(model, args, train_dataset=rotten_tomatoes[0]["train"], processing_class=tok).train()
    out = tmp_path / "signal.json"
    proc = _run("dp_signal", "--runs", f"nodp={tmp_path / 'nodp'},dp={tmp_path / 'dp'}", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(out.read_text())
    metrics = json.loads((tmp_path / "nodp" / "metrics.json").read_text())
    for name in ("negative", "positive"):
        assert scores["nodp"][name][name] == pytest.approx(metrics["per_class"][name]["final_distance"], rel=1e-4)
        assert set(scores["dp"][name]) == {"negative", "positive"}
