"""report_to: transformers' own reporting integrations for the synthesis and the harness's
fine-tuning, tested with TensorBoard offline (its event files read back with EventAccumulator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_gradmm.arguments import report_targets
from hf_gradmm.config import GradMatchConfig

pytest.importorskip("tensorboard", reason="the dev extra installs tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``folder``: tag -> [(step, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def _synthesize(model, tok, folder: Path, report_to: str, **fields):
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    settings = dict(init="lm", per_class=1, texts_per_round=1, outer_steps=3, inner_steps=1, refine_steps=0)
    settings.update(projection_beams=1)
    settings.update(seq_len=5, target_examples=4, heldout_examples=0, disable_tqdm=True, calibrate=False)
    args = GradMatchConfig(output_dir=str(folder), report_to=report_to, **{**settings, **fields})
    GradMatchSynthesizer(model, args, processing_class=tok).train()
    return args


def _distances(logs: list[dict]) -> list[tuple[int, float]]:
    return [(r["step"], r["match_distance"]) for r in logs if "match_distance" in r]


def test_tensorboard_events_hold_the_distance_of_every_outer_iteration(tiny_llama, smollm2_tokenizer, tmp_path):
    model, tok = tiny_llama, smollm2_tokenizer
    _synthesize(model, tok, tmp_path / "run", "jsonl,tensorboard", init="lm")
    logs = [json.loads(line) for line in (tmp_path / "run" / "log_history.jsonl").read_text().splitlines()]
    scalars = _scalars(tmp_path / "run" / "runs")
    expected = _distances(logs)
    assert len(expected) == 2 * 3  # two classes, three outer iterations each
    got = scalars["train/match_distance"]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert "train/round_final_distance" in scalars


def test_tensorboard_alone_writes_no_jsonl(tiny_llama, smollm2_tokenizer, tmp_path):
    model, tok = tiny_llama, smollm2_tokenizer
    _synthesize(model, tok, tmp_path / "run", "tensorboard", init="lm")
    assert not (tmp_path / "run" / "log_history.jsonl").exists()
    assert _scalars(tmp_path / "run" / "runs")["train/match_distance"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("tensorbord", "Did you mean 'tensorboard'"),
        ("none,jsonl", "'none' cannot be combined"),
        ("wandb", "pip install wandb"),
    ],
)
def test_report_to_refusals_come_at_parse_time(value, expected, tmp_path):
    if value == "wandb":
        pytest.importorskip("transformers.integrations").is_wandb_available() and pytest.skip("wandb installed")
    with pytest.raises(ValueError, match=expected):
        GradMatchConfig(report_to=value, output_dir=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_report_to_all_means_jsonl_and_every_installed_integration():
    assert report_targets("all")[:2] == ["jsonl", "tensorboard"]
    assert report_targets("none") == [] and report_targets("jsonl, tensorboard") == ["jsonl", "tensorboard"]


@pytest.mark.slow
def test_real_model_synthesis_and_harness_fine_tuning_report_to_tensorboard(smollm2, tmp_path):
    """On SmolLM2: the synthesis's event files hold its distances, and `evaluate --report-to
    tensorboard` writes each fine-tuning run's loss and dev accuracy in its own run folder."""
    from hf_gradmm.evaluation import harness
    from hf_gradmm.finetune import FinetuneConfig

    model, tok = smollm2
    _synthesize(model, tok, tmp_path / "run", "jsonl,tensorboard", outer_steps=2, init="lm", target_examples=8)
    logs = [json.loads(line) for line in (tmp_path / "run" / "log_history.jsonl").read_text().splitlines()]
    got = _scalars(tmp_path / "run" / "runs")["train/match_distance"]
    assert [v for _, v in got] == pytest.approx([v for _, v in _distances(logs)], rel=1e-6) and len(got) == 4

    evaluate = harness.EvaluateArguments(
        methods="random",
        budget=2,
        draws=1,
        seeds=1,
        output=str(tmp_path / "r.json"),
        report_to="tensorboard",
    )
    recipe = FinetuneConfig(max_steps=2, eval_steps=1, dev_examples=8, test_examples=8, finetune="lora")
    harness.run_evaluation(GradMatchConfig().to_task(), evaluate, recipe, models={"smollm2-135m": smollm2})
    scalars = _scalars(tmp_path / "r_runs" / "smollm2-135m" / "random" / "set0_seed0")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2]
    assert [s for s, _ in scalars["eval/accuracy"]] == [1, 2]
