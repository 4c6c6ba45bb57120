"""Targets along the fine-tuning trajectory (hf_gradmm/trajectory.py), on the tiny Llama and on SmolLM2."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.objective import TrajectoryObjective
from hf_gradmm.synthesizer import GradMatchSynthesizer, SynthesisError

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
    disable_tqdm=True,
    trajectory_steps=4,
    trajectory_batch_size=4,
)


def _synth(model, tok, data, out, **overrides) -> GradMatchSynthesizer:
    args = GradMatchConfig(output_dir=str(out), **{**TINY, **overrides})
    return GradMatchSynthesizer(model, args, train_dataset=data["train"], processing_class=tok)


def test_checkpoint_specs_expand_and_refuse():
    args = GradMatchConfig(target_checkpoints="theta0, trajectory:2", trajectory_steps=20)
    assert args.checkpoint_specs() == [("theta0", 1 / 3), ("trajectory:2/1", 1 / 3), ("trajectory:2/2", 1 / 3)]
    weighted = GradMatchConfig(target_checkpoints="theta0,trajectory:2", target_checkpoint_weights="2,1,1")
    assert [w for _, w in weighted.checkpoint_specs()] == [0.5, 0.25, 0.25]
    for bad, match in [
        (dict(target_checkpoints="trajectory:3", trajectory_steps=20), "divisible by 3"),
        (dict(target_checkpoints="trajectory:x"), "trajectory:K"),
        (dict(target_checkpoints=" , "), "empty"),
        (dict(target_checkpoints="theta0,theta0"), "twice"),
        (dict(target_checkpoints="theta0,trajectory:2", target_checkpoint_weights="1,1"), "needs 3"),
        (dict(target_checkpoint_weights="a"), "comma-separated"),
        (dict(trajectory_finetune="qlora"), "trajectory_finetune"),
    ]:
        with pytest.raises(ValueError, match=match):
            GradMatchConfig(**bad)


@pytest.fixture(scope="module")
def trajectory_run(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path_factory):
    data, _ = rotten_tomatoes
    out = tmp_path_factory.mktemp("traj") / "run"
    before = {n: p.detach().clone() for n, p in tiny_llama.named_parameters()}
    synth = _synth(tiny_llama, smollm2_tokenizer, data, out, target_checkpoints="theta0,trajectory:2")
    result = synth.train()
    return synth, result, out, before


def test_trajectory_run_trains_saves_and_matches_every_checkpoint(trajectory_run, tiny_llama):
    synth, result, out, before = trajectory_run
    assert len(result.texts) == 4
    for step in (2, 4):  # trajectory_steps 4, K 2: a checkpoint every 2 steps, LoRA adapters
        assert (out / "trajectory" / "k2" / f"checkpoint-{step}" / "adapter_config.json").exists()
    names = [c["name"] for c in result.metrics["target_checkpoints"]["checkpoints"]]
    assert names == ["theta0", "trajectory:2/1", "trajectory:2/2"]
    for entry in result.metrics["calibration"].values():
        assert set(entry["per_checkpoint"]) == set(names)
    # The model as given is untouched: no adapter layers, same weights; the adapters share one copy.
    assert not any("lora_" in n for n, _ in tiny_llama.named_modules())
    assert all(torch.equal(p, before[n]) for n, p in tiny_llama.named_parameters())
    parts = synth.prepared.parts[0]
    assert parts[0][1].model is tiny_llama and parts[1][1].model is parts[2][1].model is not tiny_llama
    assert all(r.x_step_seconds > 0 for r in result.rounds)


def test_trajectory_objective_is_the_weighted_mean_of_its_checkpoints(trajectory_run):
    synth, result, _, _ = trajectory_run
    objective = synth.prepared.objectives[1]
    assert isinstance(objective, TrajectoryObjective)
    ids = torch.tensor(result.rounds[-1].token_ids)
    values, grads = [], []
    x = objective.embed(ids)
    for checkpoint, part in objective.parts:
        with checkpoint.active():
            values.append(part.value(ids))
            grads.append(part.value_and_grad_embeds(x)[1])
    weights = [c.weight for c, _ in objective.parts]
    # Each checkpoint is a different point: switching adapters changes the distance.
    assert len({round(v, 7) for v in values}) == 3
    assert objective.value(ids) == pytest.approx(sum(w * v for w, v in zip(weights, values)), rel=1e-5)
    assert result.rounds[-1].final_distance == pytest.approx(objective.value(ids), rel=1e-5)
    # The x-step's gradient is the weighted sum of the checkpoints' gradients.
    xg = x.clone().requires_grad_(True)
    f, _ = objective.distance(xg)
    f.backward()
    expected = sum(w * g for w, g in zip(weights, grads))
    assert float((xg.grad - expected).abs().max() / expected.abs().max()) < 1e-3  # fp32 sums in another order
    # theta0's part is exactly the plain engine's objective.
    plain = synth.prepared.parts[1][0][1]
    assert plain.model is synth.model and values[0] == pytest.approx(plain.value(ids), rel=1e-6)


def test_rerun_resumes_and_reuses_the_trajectory(trajectory_run, tiny_llama, smollm2_tokenizer, rotten_tomatoes):
    _, result, out, _ = trajectory_run
    data, _ = rotten_tomatoes
    again = _synth(tiny_llama, smollm2_tokenizer, data, out, target_checkpoints="theta0,trajectory:2", resume=True)
    rerun = again.train()
    assert again.prepared.checkpoint_report["trajectory_k2_reused"] is True
    assert [t.text for t in rerun.texts] == [t.text for t in result.texts]
    recipe = (out / "trajectory" / "k2" / "recipe.json").read_text()
    with pytest.raises(SynthesisError, match="target_checkpoints"):
        _synth(tiny_llama, smollm2_tokenizer, data, out, target_checkpoints="trajectory:2", resume=True).train()
    with pytest.raises(SynthesisError, match="already holds"):  # refused before any fine-tuning
        _synth(
            tiny_llama, smollm2_tokenizer, data, out, target_checkpoints="theta0,trajectory:2", trajectory_steps=2
        ).train()
    assert (out / "trajectory" / "k2" / "recipe.json").read_text() == recipe


def test_user_checkpoints_adapter_and_full_model(
    trajectory_run, tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    """Checkpoints given as folders: a PEFT adapter and a full model (a perturbed copy saved with save_pretrained)."""
    _, _, out, _ = trajectory_run
    data, _ = rotten_tomatoes
    full = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.01 * torch.randn_like(p))
    full.save_pretrained(tmp_path / "full")
    adapter = out / "trajectory" / "k2" / "checkpoint-4"
    synth = _synth(
        tiny_llama,
        smollm2_tokenizer,
        data,
        tmp_path / "user",
        target_checkpoints=f"{adapter},{tmp_path / 'full'}",
        target_checkpoint_weights="3,1",
    )
    result = synth.train()
    kinds = [c["kind"] for c in result.metrics["target_checkpoints"]["checkpoints"]]
    assert kinds == ["lora adapter", "full model"]
    assert [c.weight for c, _ in synth.prepared.parts[0]] == [0.75, 0.25]
    assert len(result.texts) == 4


def test_bad_checkpoints_are_refused(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    data, _ = rotten_tomatoes
    with pytest.raises(ValueError, match="neither a PEFT adapter nor a causal LM"):
        _synth(tiny_llama, smollm2_tokenizer, data, tmp_path / "a", target_checkpoints=str(tmp_path / "nope")).train()
    other = LlamaForCausalLM(
        LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    )
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="vocabulary of 100"):
        _synth(tiny_llama, smollm2_tokenizer, data, tmp_path / "b", target_checkpoints=str(tmp_path / "other")).train()
    with pytest.raises(ValueError, match="matched_params='peft'"):
        _synth(
            tiny_llama,
            smollm2_tokenizer,
            data,
            tmp_path / "c",
            matched_params="peft",
            target_checkpoints="trajectory:2",
        ).train()


def test_trajectory_with_a_matched_block(tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path):
    """The general path (hooks + double backward) at LoRA checkpoints: base layers matched, adapters not."""
    data, _ = rotten_tomatoes
    synth = _synth(
        tiny_llama,
        smollm2_tokenizer,
        data,
        tmp_path / "block",
        matched_params=r"layers\.1\.mlp\.down_proj",
        target_checkpoints="trajectory:2",
    )
    result = synth.train()
    matched = synth.prepared.parts[0][0][1].matched
    assert matched.names and all("lora_" not in n and "down_proj" in n for n in matched.names)
    assert all(r.final_distance <= r.initial_distance + 1e-9 for r in result.rounds)
    assert tiny_llama.config._attn_implementation == "sdpa"


def test_dataset_card_names_the_checkpoints(trajectory_run, tiny_llama, smollm2_tokenizer, tmp_path):
    from hf_gradmm.dataset.builder import BuilderConfig, SyntheticDatasetBuilder

    _, _, out, _ = trajectory_run
    builder = SyntheticDatasetBuilder(
        out, BuilderConfig(label_filter="off"), model=tiny_llama, processing_class=smollm2_tokenizer
    )
    builder.build()
    card = (builder.save(tmp_path / "built") / "README.md").read_text()
    assert "Targets along a fine-tuning trajectory" in card
    assert "`trajectory:2/2` (weight 0.33;" in card and "`theta0` (weight 0.33; the model as given)" in card


@pytest.mark.slow
def test_real_model_trajectory_targets_separate_the_classes(smollm2, rotten_tomatoes, tmp_path):
    """SmolLM2 + Rotten Tomatoes: LoRA checkpoints 5 and 10 steps into the harness's recipe. At theta0 the two
    class targets are nearly orthogonal (cos ~0.07); 10 steps later they point apart (measured -0.93 with 50
    examples per class), which is the class signal the trajectory option exists for."""
    import torch.nn.functional as F

    model, tok = smollm2
    data, _ = rotten_tomatoes
    args = GradMatchConfig(
        init="lm",
        output_dir=str(tmp_path / "rt"),
        per_class=2,
        texts_per_round=2,
        outer_steps=1,
        inner_steps=2,
        refine_steps=0,
        projection_beams=1,
        target_examples=16,
        heldout_examples=4,
        target_checkpoints="theta0,trajectory:2",
        trajectory_steps=10,
        disable_tqdm=True,
    )
    synth = GradMatchSynthesizer(model, args, train_dataset=data["train"], processing_class=tok)
    result = synth.train()
    cosines = [
        float(F.cosine_similarity(neg.targets[0].flatten(), pos.targets[0].flatten(), dim=0))
        for (_, neg), (_, pos) in zip(synth.prepared.parts[0], synth.prepared.parts[1])
    ]
    assert cosines[-1] < cosines[0] - 0.3, cosines
    reported = result.metrics["target_checkpoints"]["class_target_cosine"]
    assert list(reported.values()) == pytest.approx(cosines, abs=1e-5)
    assert [c["kind"] for c in result.metrics["target_checkpoints"]["checkpoints"][1:]] == ["lora adapter"] * 2
    for entry in result.metrics["calibration"].values():
        assert set(entry["per_checkpoint"]) == {"theta0", "trajectory:2/1", "trajectory:2/2"}
    assert not any("lora_" in n for n, _ in model.named_modules())
