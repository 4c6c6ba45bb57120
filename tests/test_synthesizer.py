"""GradMatchSynthesizer on a tiny random Llama (fast) and on the real SmolLM2 (slow)."""

from __future__ import annotations

import json
import os
import signal
import weakref

import pytest
import torch
import torch.nn.functional as F
from datasets import load_from_disk
from transformers import TrainerCallback

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.projection import allowed_vocabulary
from hf_gradmm.synthesizer import GradMatchSynthesizer, SynthesisError

TINY = dict(
    init="lm",  # the ADMM round, pinned: the default is the selection
    schedule="admm",
    per_class=3,
    texts_per_round=2,
    seq_len=5,
    outer_steps=2,
    inner_steps=2,
    init_candidates=2,
    target_examples=4,
    heldout_examples=2,
    topk=20,
    refine_steps=2,
    disable_tqdm=True,
)


class Recorder(TrainerCallback):
    def __init__(self):
        self.events = []
        self.logs = []

    def on_train_begin(self, args, state, control, **kw):
        self.events.append("begin")

    def on_step_end(self, args, state, control, **kw):
        self.events.append("step")

    def on_log(self, args, state, control, logs=None, **kw):
        self.logs.append(logs)

    def on_train_end(self, args, state, control, **kw):
        self.events.append("end")


class StopAfterFirstRound(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kw):
        raise KeyboardInterrupt("simulated kill after a finished round")


def _run(model, tok, data, out, callbacks=None, **overrides):
    args = GradMatchConfig(output_dir=str(out), **{**TINY, **overrides})
    synth = GradMatchSynthesizer(model, args, train_dataset=data["train"], processing_class=tok, callbacks=callbacks)
    return synth.train()


@pytest.fixture(scope="module")
def tiny_run(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path_factory):
    data, _ = rotten_tomatoes
    out = tmp_path_factory.mktemp("tiny") / "run"
    recorder = Recorder()
    result = _run(tiny_llama, smollm2_tokenizer, data, out, callbacks=[recorder])
    return result, out, recorder


def test_tiny_run_writes_a_dataset_config_and_metrics(tiny_run, smollm2_tokenizer):
    result, out, _ = tiny_run
    assert [t.label for t in result.texts] == [0, 0, 0, 1, 1, 1]
    ds = load_from_disk(str(out))
    assert ds.features["label"].names == ["negative", "positive"]
    assert set(ds.column_names) >= {"text", "label", "round", "match_distance", "nll"}
    assert ds["text"] == [t.text for t in result.texts]
    assert sorted(p.name for p in (out / "rounds").iterdir()) == [f"round_000{i}.json" for i in range(4)]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("negative", "positive"):
        cal = metrics["calibration"][name]
        for key in ("heldout_same_class", "other_classes", "model_sampled", "gradmm_initial", "gradmm_final"):
            assert 0.0 <= cal[key] <= 2.0
        assert cal["gradmm_final"] <= cal["gradmm_initial"]
    assert "lr: 0.008" in (out / "config.yaml").read_text()


def test_tiny_run_uses_only_allowed_tokens(tiny_run, tiny_llama, smollm2_tokenizer):
    result, _, _ = tiny_run
    allowed = allowed_vocabulary(smollm2_tokenizer, tiny_llama.config.vocab_size, "words")
    for record in result.rounds:
        ids = torch.tensor(record.token_ids)
        assert ids.shape[1] == 5 and allowed[ids].all()


def test_callbacks_receive_trainer_events(tiny_run):
    _, _, recorder = tiny_run
    assert recorder.events[0] == "begin" and recorder.events[-1] == "end"
    assert recorder.events.count("step") == 4 * 2  # 4 rounds x 2 outer iterations
    step_logs = [log for log in recorder.logs if "match_distance" in log]
    assert len(step_logs) == 8 and all(log["best_distance"] <= log["match_distance"] + 1e-9 for log in step_logs)


def test_same_seed_same_texts_and_resume_after_a_kill(
    tiny_run, tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    result, _, _ = tiny_run
    data, _ = rotten_tomatoes
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_llama, smollm2_tokenizer, data, out, callbacks=[StopAfterFirstRound()])
    assert [p.name for p in (out / "rounds").iterdir()] == ["round_0000.json"]  # the finished round is kept
    with pytest.raises(SynthesisError, match="--resume"):
        _run(tiny_llama, smollm2_tokenizer, data, out)
    with pytest.raises(SynthesisError, match="config.lr"):
        _run(tiny_llama, smollm2_tokenizer, data, out, resume=True, lr=0.01)
    resumed = _run(tiny_llama, smollm2_tokenizer, data, out, resume=True)
    assert [t.text for t in resumed.texts] == [t.text for t in result.texts]


class CtrlCInAFinalizer(TrainerCallback):
    """Presses Ctrl-C (SIGINT to this process) from inside a finalizer at round 0's first step:
    Python drops the KeyboardInterrupt raised there ("Exception ignored in ...")."""

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 1:
            weakref.finalize(Dummy(), os.kill, os.getpid(), signal.SIGINT)  # runs (and drops) at once


class Dummy:
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped one, on purpose
def test_a_ctrl_c_python_dropped_still_stops_the_run_after_the_round(
    tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    data, _ = rotten_tomatoes
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when pytest runs as a background job
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "c", callbacks=[CtrlCInAFinalizer()], per_class=2)
    assert [p.name for p in (tmp_path / "c" / "rounds").iterdir()] == ["round_0000.json"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


class StopAfterOneRound(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kw):
        control.should_training_stop = True


def test_callback_can_stop_after_a_round_and_resume_finishes(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    data, _ = rotten_tomatoes
    stopped = _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "s", callbacks=[StopAfterOneRound()], per_class=2)
    assert len(stopped.rounds) == 1 and set(stopped.metrics["per_class"]) == {"negative"}
    assert len(load_from_disk(str(tmp_path / "s"))) == 2  # the finished round's texts are written
    finished = _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "s", per_class=2, resume=True)
    assert len(finished.rounds) == 2 and finished.rounds[0].texts == stopped.rounds[0].texts


def test_pool_smaller_than_requested_is_refused(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    data, _ = rotten_tomatoes
    small = {"train": data["train"].select(range(12))}
    with pytest.raises(ValueError, match="fewer than"):
        _run(tiny_llama, smollm2_tokenizer, small, tmp_path / "x", target_examples=20)


def test_non_finite_distance_stops_the_round_and_keeps_its_best(
    tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    data, _ = rotten_tomatoes
    recorder = Recorder()
    result = _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "nan", callbacks=[recorder], lr=1e30, per_class=2)
    assert len(result.texts) == 4 and all(r.stopped_early for r in result.rounds)
    assert any("non-finite" in log.get("warning", "") for log in recorder.logs)
    assert all(r.admm_distance == r.initial_distance for r in result.rounds)


@pytest.mark.parametrize(
    "overrides",
    [
        {"projection": "reference"},
        {"projection": "guided", "projection_beams": 3},
        {"init": "real", "target_centering": "common", "distance": "l2"},
        {"init": "lm", "refine_steps": 2, "lm_coeff": 0.1},
        {"matched_params": r"model\.layers\.1\.mlp\.down_proj", "distance": "l1+l2"},
    ],
)
def test_engine_options_run(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path, overrides):
    data, _ = rotten_tomatoes
    result = _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "opt", per_class=2, **overrides)
    assert len(result.texts) == 4
    for r in result.rounds:
        assert r.final_distance <= r.initial_distance + 1e-9
    assert tiny_llama.config._attn_implementation == "sdpa"  # restored after the general path


def test_multi_token_label_word_refused_before_any_work(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    data, _ = rotten_tomatoes
    with pytest.raises(ValueError, match="unwatchable"):
        _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "w", label_words="unwatchable,great")
    assert not (tmp_path / "w" / "rounds").exists()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="projection"):
        GradMatchConfig(projection="nearest")
    with pytest.raises(ValueError, match="per_class"):
        GradMatchConfig(per_class=0)
    with pytest.raises(ValueError, match="projection_beams"):
        GradMatchConfig(projection_beams=300, topk=200)


@pytest.mark.slow
def test_real_model_synthesis_is_readable_and_calibrated(smollm2, real_synthesis):
    """SmolLM2 + Rotten Tomatoes, reduced steps: 4 texts per class from allowed words, far more
    likely under the model than the same words shuffled, with every calibration figure reported."""
    model, tok = smollm2
    result, args = real_synthesis
    assert [t.label for t in result.texts] == [0] * 4 + [1] * 4
    allowed = allowed_vocabulary(tok, model.get_input_embeddings().weight.shape[0], args.vocab_filter)
    for record in result.rounds:
        assert allowed[torch.tensor(record.token_ids)].all()
        assert record.final_distance <= record.admm_distance <= record.initial_distance
    for name, stats in result.metrics["per_class"].items():
        assert stats["mean_nll"] < stats["mean_nll_words_shuffled"] - 0.5, (name, stats)
        assert all(t.text.strip() for t in result.texts)
    cal = result.metrics["calibration"]
    assert set(cal) == {"negative", "positive"}
    assert all(0 < cal[c][k] < 2 for c in cal for k in ("heldout_same_class", "other_classes", "model_sampled"))
    assert result.metrics["generator"] == "smollm2-135m"


def test_matching_a_lora_adapter(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    """matched_params='peft' matches the gradient of a PEFT model's LoRA layers (hooks + double backward)."""
    import copy

    from peft import LoraConfig, get_peft_model

    data, _ = rotten_tomatoes
    peft_model = get_peft_model(copy.deepcopy(tiny_llama), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    # LoRA's B starts at zero, which makes A's gradient zero; give B values so both matter.
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    result = _run(peft_model, smollm2_tokenizer, data, tmp_path / "lora", per_class=2, matched_params="peft")
    assert len(result.texts) == 4
    assert all(r.final_distance <= r.initial_distance + 1e-9 for r in result.rounds)
    assert all(0 <= r.final_distance <= 2 for r in result.rounds)


class SubstepRecorder(TrainerCallback):
    def __init__(self):
        self.substeps = []

    def on_substep_end(self, args, state, control, stage=None, step=0, steps=0, **kw):
        self.substeps.append((stage, step, steps))


def test_progress_moves_through_every_stage_of_a_round(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    """on_substep_end fires within a round (each x-step, each projection after the first, each
    refinement step), and the progress bar ends at its total: one step per outer iteration and
    per refinement step of every round."""
    from hf_gradmm.callbacks import SynthesisProgressCallback

    class Bar(SynthesisProgressCallback):
        def on_train_end(self, args, state, control, **kwargs):
            self.final = (self.bar.n, self.bar.total)
            super().on_train_end(args, state, control, **kwargs)

    data, _ = rotten_tomatoes
    recorder, bar = SubstepRecorder(), Bar()
    _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "p", callbacks=[recorder, bar], refine_steps=3)
    rounds = 4  # 3 texts per class in rounds of 2: 2 rounds per class
    stages = ("x_step", "projection", "beam_choice", "refine")
    by_stage = {name: [s for s in recorder.substeps if s[0] == name] for name in stages}
    # 4 beams: one tick per row of each projected batch (rounds of 2 and 1 texts per class, one z-step each)
    assert [s[1:] for s in by_stage["beam_choice"]] == [(1, 2), (2, 2), (1, 1), (1, 2), (2, 2), (1, 1)]
    assert len(by_stage["x_step"]) == rounds * 2 * 2  # outer x inner steps
    assert len(by_stage["projection"]) == rounds * (2 - 1)  # the first Z is the init's
    assert [s[1] for s in by_stage["refine"][:3]] == [1, 2, 3] and len(by_stage["refine"]) == rounds * 3
    assert bar.final == (rounds * (2 + 3), rounds * (2 + 3)) and bar.bar is None


def test_progress_counts_rounds_without_steps(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    """The default round (the selection, no ADMM or refinement steps) has no steps to tick: the bar
    counts one per round, and a resumed run starts at the rounds it had finished."""
    from hf_gradmm.callbacks import SynthesisProgressCallback

    class Bar(SynthesisProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            self.start = (self.bar.n, self.bar.total)

        def on_train_end(self, args, state, control, **kwargs):
            self.final = (self.bar.n, self.bar.total)
            super().on_train_end(args, state, control, **kwargs)

    data, _ = rotten_tomatoes
    select = dict(init="select", schedule="none", outer_steps=0, inner_steps=0, refine_steps=0, select_pool=4)
    select.update(select_margin_keep=2)
    first = Bar()
    _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "sel", callbacks=[first], **select)
    assert first.start == (0, 4) and first.final == (4, 4)  # 3 texts per class in rounds of 2: 4 rounds
    for extra in (tmp_path / "sel" / "rounds").glob("round_000[23].json"):
        extra.unlink()
    again = Bar()
    _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "sel", callbacks=[again], resume=True, **select)
    assert again.start == (2, 4) and again.final == (4, 4)


def test_stages_are_recorded_only_when_asked(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    from hf_gradmm.engine.stages import recording, stage

    with stage("nothing records this"):
        pass
    data, _ = rotten_tomatoes
    with recording() as seconds:
        _run(tiny_llama, smollm2_tokenizer, data, tmp_path / "s")
    expected = {"targets", "init", "projection", "beam_choice", "z_distance", "x_step", "record", "io", "calibration"}
    assert expected | {"refine_scoring", "refine_candidates", "refine_accept"} <= set(seconds)
    assert all(v >= 0 for v in seconds.values())


def test_control_runs_match_another_target(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    """target_control: 'swapped' gives each class the next class's real target (its own label word
    kept); 'random' a random direction with the norm of its own target; the card says it is a control."""
    from hf_gradmm.dataset import BuilderConfig, SyntheticDatasetBuilder

    data, _ = rotten_tomatoes
    made = {}
    for control in ("off", "swapped", "random"):
        args = GradMatchConfig(output_dir=str(tmp_path / control), **{**TINY, "target_control": control})
        synth = GradMatchSynthesizer(tiny_llama, args, train_dataset=data["train"], processing_class=smollm2_tokenizer)
        synth.train()
        made[control] = {c: synth.prepared.objectives[c] for c in (0, 1)}
    real, swapped, random_ = made["off"], made["swapped"], made["random"]
    for c in (0, 1):
        assert torch.equal(swapped[c].targets[0], real[1 - c].targets[0])
        assert swapped[c].label_token == real[c].label_token
        assert float(random_[c].target_norm) == pytest.approx(float(real[c].target_norm), rel=1e-4)
        cosine = F.cosine_similarity(random_[c].targets[0].flatten(), real[c].targets[0].flatten(), dim=0)
        assert abs(float(cosine)) < 0.05
    for control in ("swapped", "off"):
        builder = SyntheticDatasetBuilder(
            str(tmp_path / control), BuilderConfig(label_filter="off"), model=tiny_llama,
            processing_class=smollm2_tokenizer,
        )  # fmt: skip
        card = (builder.save(tmp_path / f"built_{control}") / "README.md").read_text()
        assert ("A control run, not training data" in card) == (control == "swapped")
    assert "the next class's target" in (tmp_path / "built_swapped" / "README.md").read_text()
