"""Where the engine computes: the device choice, and (where a CUDA GPU exists) a run on it.

The CPU tests run everywhere; the GPU ones (marked ``gpu``) are skipped without CUDA, so CI (CPU
only) runs the first group and a GPU machine runs all of them.
"""

from __future__ import annotations

import copy

import pytest
import torch

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.distributed import device
from hf_gradmm.engine.gradients import ClassTarget, select_matched
from hf_gradmm.engine.objective import MatchingObjective, template_parts
from hf_gradmm.synthesizer import GradMatchSynthesizer


def gpu_test(test):
    """Runs on the GPU (the conftest keeps every other test on the CPU); skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


TINY = dict(
    init="lm",  # the ADMM round, pinned: the default is the selection
    schedule="admm",
    per_class=2,
    texts_per_round=2,
    seq_len=5,
    outer_steps=2,
    inner_steps=2,
    target_examples=4,
    heldout_examples=2,
    topk=20,
    refine_steps=2,
    projection_beams=2,
    disable_tqdm=True,
)


def test_device_choice(monkeypatch):
    assert device(use_cpu=True) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert device() == torch.device("cuda", 0)  # one process: the current GPU
    assert device(use_cpu=True) == torch.device("cpu")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # what launch(use_cpu=True) sets for its processes
    assert device() == torch.device("cpu")


def test_more_gpu_processes_than_gpus_are_refused(monkeypatch):
    from hf_gradmm.distributed import check_gpus

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="2 processes need 2 GPUs .* has 1: use --num-processes 1, or --use-cpu"):
        check_gpus(2)
    check_gpus(1)
    check_gpus(2, use_cpu=True)  # CPU processes: any number


def test_use_cpu_is_a_runtime_field():
    """A run may resume on another device: use_cpu is not part of the resume fingerprint."""
    assert "use_cpu" not in GradMatchConfig(use_cpu=True).fingerprint()


def _synthesize(model, tok, data, out, **overrides):
    args = GradMatchConfig(output_dir=str(out), **{**TINY, **overrides})
    synth = GradMatchSynthesizer(model, args, train_dataset=data["train"], processing_class=tok)
    return synth, synth.train()


def test_cpu_run_reports_its_device(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    synth, result = _synthesize(tiny_llama, smollm2_tokenizer, rotten_tomatoes[0], tmp_path / "cpu", use_cpu=True)
    assert result.metrics["device"] == "cpu" and result.metrics["processes"] == 1
    assert next(tiny_llama.parameters()).device.type == "cpu"


@gpu_test
@pytest.mark.parametrize(
    "overrides", [{}, {"dp_epsilon": 4.0, "heldout_examples": 0}, {"matched_params": r"layers\.1\."}]
)
def test_gpu_run_computes_on_the_gpu_and_its_distances_hold_on_the_cpu(
    tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path, overrides
):
    """Everything of a run sits on the GPU (a stray CPU tensor would raise), and the distances the
    run reports are what the CPU computes for the same texts and targets."""
    model = copy.deepcopy(tiny_llama)
    synth, result = _synthesize(model, smollm2_tokenizer, rotten_tomatoes[0], tmp_path / "gpu", **overrides)
    assert result.metrics["device"].startswith("cuda") and next(model.parameters()).is_cuda
    assert len(result.texts) == 2 * TINY["per_class"]
    cpu_model = copy.deepcopy(model).cpu()
    matched = select_matched(cpu_model, synth.args.matched_params)
    for label, objective in synth.prepared.objectives.items():
        target = ClassTarget([t.detach().cpu() for t in objective.targets], 1)
        lead, tail = template_parts(synth.task.template, smollm2_tokenizer)
        on_cpu = MatchingObjective(cpu_model, matched, target, objective.label_token, lead, tail, synth.args.distance)
        for record in (r for r in result.rounds if r.label == label):
            ids = torch.tensor(record.token_ids)
            assert on_cpu.value(ids) == pytest.approx(record.final_distance, rel=1e-3, abs=1e-5)


@gpu_test
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_make_the_same_texts_as_one(tiny_llama, smollm2_tokenizer, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "model"
    tiny_llama.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    args = [sys.executable, "-m", "hf_gradmm.cli", "synthesize", "--model", str(folder), "--task", "rotten_tomatoes"]
    args += ["--init", "lm", "--per-class", "4", "--texts-per-round", "2", "--seq-len", "5", "--outer-steps", "2"]
    args += ["--inner-steps", "2", "--target-examples", "20", "--heldout-examples", "2", "--topk", "20"]
    args += ["--refine-steps", "2", "--disable-tqdm"]
    for name, extra in (("one", []), ("two", ["--num-processes", "2"])):
        proc = subprocess.run([*args, "--output-dir", str(tmp_path / name), *extra], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "two"))["text"] == load_from_disk(str(tmp_path / "one"))["text"]


@gpu_test
@pytest.mark.slow
def test_real_model_on_the_gpu(smollm2, rotten_tomatoes, tmp_path):
    model, tok = copy.deepcopy(smollm2[0]), smollm2[1]
    _, result = _synthesize(
        model, tok, rotten_tomatoes[0], tmp_path / "gpu", per_class=4, texts_per_round=4, seq_len=12, outer_steps=2,
        inner_steps=5, target_examples=16, heldout_examples=4, topk=100, refine_steps=5,
    )  # fmt: skip
    assert result.metrics["device"].startswith("cuda")
    for entry in result.metrics["per_class"].values():
        assert entry["final_distance"] <= entry["initial_distance"]
