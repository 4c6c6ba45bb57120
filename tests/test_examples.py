"""Every example script: the offline ones run end to end with --quick; the Hub ones fail fast and clearly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OFFLINE = ["rotten_tomatoes", "tweet_sentiment", "custom_csv"]
HUB = ["sst2", "emotion", "imdb", "ag_news"]


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
@pytest.mark.parametrize("script", OFFLINE)
def test_offline_example_runs_end_to_end_quick(script, tmp_path):
    """Synthesize -> build -> fine-tune and evaluate on the real SmolLM2 and real data, tiny budget."""
    out = tmp_path / script
    proc = _run(script, "--quick", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["built_texts"] >= 1 and summary["synthetic_texts"] >= summary["built_texts"]
    accuracy = summary["transfer"]["smollm2-135m"]["test_accuracy"]
    assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0
    assert (out / "dataset" / "README.md").exists() and (out / "synthesis" / "metrics.json").exists()


@pytest.mark.parametrize("script", HUB)
def test_hub_example_fails_fast_and_clearly_without_the_hub(script, tmp_path):
    with socket.socket() as s:  # a port nothing listens on: the Hub is unreachable
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
    proc = _run(script, "--quick", "--output-dir", str(tmp_path / script), env=env)
    assert proc.returncode != 0
    assert "Cannot reach the Hub" in proc.stderr and "HF_ENDPOINT" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 60
    assert not (tmp_path / script / "synthesis").exists()  # nothing started
