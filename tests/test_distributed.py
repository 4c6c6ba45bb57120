"""Several processes with accelerate (gloo on CPU): sharded targets and rounds give the one-process results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

HERE = Path(__file__).resolve().parent
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torchrun gives each process one thread; the one-process run matches it
TINY = [
    "--init", "lm", "--schedule", "admm",  # the ADMM round, pinned: the default is the selection
    "--task", "rotten_tomatoes", "--per-class", "4", "--texts-per-round", "2", "--seq-len", "5",
    "--outer-steps", "2", "--inner-steps", "2", "--target-examples", "20", "--target-batch-size", "8",
    "--heldout-examples", "2", "--topk", "20", "--refine-steps", "2", "--disable-tqdm",
]  # fmt: skip


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **ONE_THREAD, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hf_gradmm.cli", "synthesize", *args]


def _synthesize(*args: str) -> subprocess.CompletedProcess:
    return _run(_command(*args))


@pytest.fixture
def background():
    """Starts ``hf-gradmm synthesize`` in the background (one thread) for a run the test needs only
    at its end; whatever is still running when the test ends (a failure) is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        env = {**os.environ, **ONE_THREAD}
        proc = subprocess.Popen(_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _finish(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama, smollm2_tokenizer, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_llama.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("matched", ["lm_head", r"layers\.1\.mlp\.down_proj"])
def test_target_from_two_shards_equals_one_process(tiny_dir, matched, tmp_path):
    from hf_gradmm.engine.gradients import class_target, select_matched
    from hf_gradmm.models import load_model_and_tokenizer
    from hf_gradmm.tasks import get_task, label_token_ids, load_task

    out = tmp_path / "target.pt"
    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    _run([*launch, str(HERE / "distributed_target.py"), tiny_dir, matched, str(out)])
    model, tok = load_model_and_tokenizer(tiny_dir)
    data, task = load_task(get_task("rotten_tomatoes"))
    prompts = [task.format_prompt(t) for t in data["train"]["text"][:37]]  # 5 batches of 8: uneven shards
    single = class_target(model, tok, select_matched(model, matched), prompts, label_token_ids(task, tok)[1], 8)
    for sharded, one in zip(torch.load(out), single.tensors):
        assert float((sharded - one).norm() / one.norm()) <= 1e-5


def _worker(launcher: int, rank: int):
    """The worker process of ``rank`` under the launch started as ``launcher`` (pid), or None."""
    import psutil

    for child in psutil.Process(launcher).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "hf_gradmm.cli" in " ".join(child.cmdline()):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_a_killed_process_loses_only_its_unfinished_round(tiny_dir, background, tmp_path):
    """SIGKILL process 1 in the middle of its second round: every round finished before the kill
    stays on disk as written, and a --resume makes the missing rounds only, with the 1-process texts."""
    slower = [*TINY, "--per-class", "8", "--outer-steps", "3", "--inner-steps", "20", "--refine-steps", "20"]
    args = ["--model", tiny_dir, *slower]
    one, two = tmp_path / "one", tmp_path / "two"
    reference = background(*args, "--output-dir", str(one))  # the 1-process texts, made beside the kill
    run = subprocess.Popen(
        _command(*args, "--output-dir", str(two), "--num-processes", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ONE_THREAD},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (two / "rounds" / "round_0001.json").exists():  # process 1's first round: it is now on round 3
            assert run.poll() is None and time.monotonic() < deadline, "the 2-process run ended before the kill"
            time.sleep(0.02)
        victim = _worker(run.pid, 1)
        assert victim is not None
        victim.kill()
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode != 0, "the launch must fail when a process dies"
    finished = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (two / "rounds").glob("round_*.json")}
    assert "round_0001.json" in finished and len(finished) < 8, sorted(finished)
    assert not (two / "metrics.json").exists()  # nothing but finished rounds was written
    _synthesize(*args, "--output-dir", str(two), "--num-processes", "2", "--resume")
    after = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (two / "rounds").glob("round_*.json")}
    assert {name: after[name] for name in finished} == finished  # kept as they were, not redone
    assert len(after) == 8
    _finish(reference)
    assert load_from_disk(str(two))["text"] == load_from_disk(str(one))["text"]


@pytest.mark.slow
def test_real_model_two_processes_same_texts(background, tmp_path):
    args = ["--model", "smollm2-135m", "--task", "rotten_tomatoes", "--per-class", "2", "--texts-per-round", "2"]
    args += ["--init", "lm", "--outer-steps", "1", "--inner-steps", "2", "--refine-steps", "2"]
    args += ["--projection-beams", "2"]
    args += ["--target-examples", "16", "--heldout-examples", "2", "--disable-tqdm"]
    reference = background(*args, "--output-dir", str(tmp_path / "one"))  # both runs at once: 3 threads, 2 cores
    _synthesize(*args, "--output-dir", str(tmp_path / "two"), "--num-processes", "2")
    _finish(reference)
    assert load_from_disk(str(tmp_path / "two"))["text"] == load_from_disk(str(tmp_path / "one"))["text"]
