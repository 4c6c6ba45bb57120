"""Differential privacy of the targets: calibration by the accountant, clipping, noise, refusals, a DP run."""

from __future__ import annotations

import math

import pytest
import torch

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.gradients import ClassTarget, class_target, select_matched
from hf_gradmm.targets.privacy import noise_multiplier, privatise, sensitivity
from hf_gradmm.tasks import label_token_ids

pytestmark = pytest.mark.usefixtures("models_restored")  # the clipping test unfreezes tiny_llama's parameters

DP = dict(dp_epsilon=4.0, seq_len=5, heldout_examples=0)


@pytest.mark.parametrize("epsilon,delta", [(1.0, 1e-5), (4.0, 1e-5), (16.0, 1e-6)])
def test_sigma_is_the_accountants_calibration(epsilon, delta):
    import dp_accounting
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    sigma = noise_multiplier(epsilon, delta)
    assert sigma == dp_accounting.get_sigma_gaussian(epsilon, delta)
    # An independent check with the library's PLD accountant: that sigma spends (epsilon, delta).
    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dp_event.GaussianDpEvent(sigma))
    assert accountant.get_epsilon(delta) == pytest.approx(epsilon, rel=2e-2)


def test_noise_std_is_sigma_times_sensitivity_empirically():
    args = GradMatchConfig(**DP, dp_clip_norm=2.0, dp_neighbouring="replace_one")
    zero = {0: ClassTarget([torch.zeros(400, 500)], 50), 1: ClassTarget([torch.zeros(400, 500)], 50)}
    noisy, report, local = privatise(zero, args, torch.Generator().manual_seed(0), row_dim=500)
    expected = noise_multiplier(4.0, 1e-5) * sensitivity(2.0, 50, "replace_one")
    assert report["noise_std"] == pytest.approx(expected) and report["sensitivity_l2"] == pytest.approx(4.0 / 50)
    for c in (0, 1):
        sample = noisy[c].tensors[0]
        assert float(sample.std()) == pytest.approx(expected, rel=0.01)  # 200,000 draws
        assert abs(float(sample.mean())) < 3 * expected / math.sqrt(sample.numel()) * 2
    assert not torch.equal(noisy[0].tensors[0], noisy[1].tensors[0])  # independent noise per class
    # Public bounds from the configuration alone; the measured figures stay in the local statistics.
    assert report["noise_norm_expected"] == pytest.approx(expected * math.sqrt(200_000))
    assert report["signal_to_noise_at_most"] == pytest.approx(2.0 / (expected * math.sqrt(200_000)))
    assert report["row_signal_to_noise_at_most"] == pytest.approx(2.0 / (expected * math.sqrt(500)))
    assert local[0]["noise_norm"] == pytest.approx(report["noise_norm_expected"], rel=0.01)
    assert local[0]["clipped_mean_norm"] == 0.0 and "clipped_mean_norm" not in str(report)
    two = privatise(zero, args, torch.Generator().manual_seed(0), releases=4)[1]
    assert two["noise_std"] == pytest.approx(2 * expected)  # 4 releases: sqrt(4) x the sensitivity


@pytest.mark.parametrize("matched", ["lm_head", r"layers\.1\.mlp\.down_proj"])
def test_clipping_bounds_every_example_and_matches_autograd(tiny_llama, smollm2_tokenizer, rotten_tomatoes, matched):
    """The clipped target equals the mean of per-example autograd gradients scaled to norm <= C."""
    import torch.nn.functional as F

    from hf_gradmm.lm import encode_prompts

    data, task = rotten_tomatoes
    prompts = [task.format_prompt(t) for t in data["train"]["text"][:6]]
    label = label_token_ids(task, smollm2_tokenizer)[1]
    chosen = select_matched(tiny_llama, matched)
    params = chosen.parameters()
    grads = []
    for prompt in prompts:
        for p in params:
            p.requires_grad_(True)
        batch = encode_prompts(smollm2_tokenizer, [prompt])
        embeds = tiny_llama.get_input_embeddings()(batch["input_ids"]).detach()  # tied weights: output use only
        logits = tiny_llama(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits[:, -1, :].float(), torch.tensor([label]))
        grads.append([g.detach() for g in torch.autograd.grad(loss, params)])
        for p in params:
            p.requires_grad_(False)
    norms = [math.sqrt(sum(float(g.pow(2).sum()) for g in gs)) for gs in grads]
    ordered = sorted(norms)
    clip = (ordered[2] + ordered[3]) / 2  # half the examples get clipped, none sits at the bound
    scaled = [[g * min(1.0, clip / n) for g in gs] for gs, n in zip(grads, norms)]
    expected = [sum(gs[i] for gs in scaled) / len(prompts) for i in range(len(params))]
    target = class_target(tiny_llama, smollm2_tokenizer, chosen, prompts, label, batch_size=4, clip_norm=clip)
    assert target.clipped == sum(n > clip for n in norms) == 3
    for got, want in zip(target.tensors, expected):
        assert float((got - want).norm() / want.norm()) < 1e-4


def test_leaking_options_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="seq_len=0"):
        GradMatchConfig(dp_epsilon=1.0, heldout_examples=0)
    with pytest.raises(ValueError, match="init='real'"):
        GradMatchConfig(**{**DP, "init": "real"})
    with pytest.raises(ValueError, match="heldout_examples"):
        GradMatchConfig(**{**DP, "heldout_examples": 10})
    with pytest.raises(ValueError, match="fine-tunes on the private examples without differential privacy"):
        GradMatchConfig(**DP, target_checkpoints="trajectory:2")
    with pytest.raises(ValueError, match="dp-public-checkpoints"):
        GradMatchConfig(**DP, target_checkpoints="theta0,some/checkpoint")
    GradMatchConfig(**DP, target_checkpoints="theta0,some/checkpoint", dp_public_checkpoints=True)
    with pytest.raises(ValueError, match="dp_neighbouring"):
        GradMatchConfig(**DP, dp_neighbouring="swap")


def test_dp_run_uses_noisy_targets_reports_them_and_resumes_with_the_same_noise(
    tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    data, _ = rotten_tomatoes
    tiny = dict(init="lm", per_class=2, texts_per_round=2, outer_steps=1, inner_steps=2, topk=20, refine_steps=1)
    args = GradMatchConfig(output_dir=str(tmp_path / "dp"), target_examples=8, disable_tqdm=True, **DP, **tiny)
    synth = GradMatchSynthesizer(tiny_llama, args, train_dataset=data["train"], processing_class=smollm2_tokenizer)
    result = synth.train()
    dp = result.metrics["dp"]
    assert dp["epsilon"] == 4.0 and dp["noise_multiplier"] == pytest.approx(noise_multiplier(4.0, 1e-5))
    local = result.metrics["dp_local"]["per_checkpoint"]["theta0"]
    assert set(local) == {"negative", "positive"} and "per_class" not in dp
    assert all(v["signal_to_noise"] > 0 for v in local.values())
    assert dp["row_signal_to_noise_at_most"] == pytest.approx(1.0 / (dp["noise_std"] * math.sqrt(32)))
    assert result.metrics["calibration"]["negative"]["heldout_same_class"] is None  # no real text read
    noisy = synth.prepared.parts[0][0][1].targets[0].clone()
    clean = class_target(
        tiny_llama,
        smollm2_tokenizer,
        select_matched(tiny_llama, "lm_head"),
        [synth.prepared.task.format_prompt(t) for t in synth.prepared.pool[0]["target"]],
        synth.prepared.label_tokens[0],
        clip_norm=1.0,
    ).tensors[0]
    assert float((noisy - clean).std()) == pytest.approx(dp["noise_std"], rel=0.01)
    again = GradMatchSynthesizer(
        tiny_llama, GradMatchConfig(**{**args.to_dict(), "resume": True}), train_dataset=data["train"],
        processing_class=smollm2_tokenizer,
    )  # fmt: skip
    again.train()
    assert torch.equal(again.prepared.parts[0][0][1].targets[0], noisy)  # the resumed run adds the same noise


def test_the_default_selection_runs_under_dp_on_the_noisy_targets(
    tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    """The default engine (the shortlisted selection) under DP: the shortlist reads public text only
    (the task's hand-written demonstrations), the choice reads the noisy targets, so DP allows it;
    the run's texts are chosen against those targets and its accounting is reported."""
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    data, _ = rotten_tomatoes
    shortlist = dict(per_class=2, texts_per_round=2, select_pool=8, select_margin_keep=4, topk=20)
    args = GradMatchConfig(output_dir=str(tmp_path / "dp"), target_examples=8, disable_tqdm=True, **DP, **shortlist)
    assert (args.init, args.outer_steps, args.refine_steps) == ("select", 0, 0)
    synth = GradMatchSynthesizer(tiny_llama, args, train_dataset=data["train"], processing_class=smollm2_tokenizer)
    result = synth.train()
    assert result.metrics["dp"]["epsilon"] == 4.0 and len(result.texts) == 4
    assert sorted(r.label for r in result.rounds) == [0, 1]
    for record in result.rounds:  # the distance kept is the one to the noisy target the run matched
        value = synth.prepared.objectives[record.label].value(torch.tensor(record.token_ids))
        assert value == pytest.approx(record.final_distance, rel=1e-4)


def test_builder_publishes_nothing_read_from_real_data_for_a_dp_run(
    tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    from hf_gradmm.dataset.builder import BuilderConfig, SyntheticDatasetBuilder
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    data, _ = rotten_tomatoes
    tiny = dict(init="lm", per_class=2, texts_per_round=2, outer_steps=1, inner_steps=1, topk=20, refine_steps=0)
    args = GradMatchConfig(output_dir=str(tmp_path / "dp"), target_examples=8, disable_tqdm=True, **DP, **tiny)
    GradMatchSynthesizer(tiny_llama, args, train_dataset=data["train"], processing_class=smollm2_tokenizer).train()
    model = dict(model=tiny_llama, processing_class=smollm2_tokenizer)
    for bad in (dict(fewshot="real"), dict(include_real_splits=True)):
        with pytest.raises(ValueError, match="differential privacy"):
            SyntheticDatasetBuilder(tmp_path / "dp", BuilderConfig(**bad), **model)
    builder = SyntheticDatasetBuilder(tmp_path / "dp", BuilderConfig(label_filter="off"), **model)
    built = builder.build()["train"]
    folder = builder.save(tmp_path / "built")
    assert set(built["longest_common_ngram"]) == {None} and set(built["copied"]) == {None}
    assert builder.report["memorisation"] is None and builder.report["real_reference"] is None
    assert (folder / "memorisation.jsonl").read_text() == ""  # the pushed file
    assert len((folder / "memorisation_with_real_texts.jsonl").read_text().splitlines()) == len(built)  # local
    card = (folder / "README.md").read_text()
    assert "made with differential privacy: epsilon 4.0" in card and "noise_multiplier" in card
    assert "signal_to_noise_at_most" in card and "dp-accounting" in card and "Not published" in card
    for private in ("clipped_mean_norm", "clipped_examples", "dp_local"):  # statistics of the private data
        assert private not in card and private not in (folder / "build_report.json").read_text()


def test_membership_auc_is_the_rank_statistic():
    from hf_gradmm.evaluation.audit import membership_auc

    assert membership_auc([0.1, 0.2], [0.5, 0.9]) == 1.0  # members have lower loss: always told apart
    assert membership_auc([0.5, 0.9], [0.1, 0.2]) == 0.0
    assert membership_auc([0.3, 0.3], [0.3, 0.3]) == 0.5
    assert membership_auc([0.1, 0.6], [0.5, 0.9]) == 0.75


def test_chance_band_matches_the_null_distribution_of_the_auc():
    """95% of AUCs between two samples from one distribution fall within 0.5 +- chance_band."""
    import random

    from hf_gradmm.evaluation.audit import chance_band, membership_auc

    band = chance_band(100, 100)
    assert band == pytest.approx(0.080, abs=0.001)
    rng = random.Random(0)
    aucs = [membership_auc([rng.random() for _ in range(100)], [rng.random() for _ in range(100)]) for _ in range(2000)]
    inside = sum(abs(a - 0.5) <= band for a in aucs) / len(aucs)
    assert 0.93 <= inside <= 0.97


def test_audit_runs_every_source_on_disjoint_members_and_nonmembers(
    tiny_llama, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    from hf_gradmm.evaluation import FinetuneConfig
    from hf_gradmm.evaluation.audit import AuditArguments, members_and_nonmembers, run_audit
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    data, task = rotten_tomatoes
    tiny = dict(init="lm", per_class=2, texts_per_round=2, outer_steps=1, inner_steps=1, topk=20, refine_steps=0)
    args = GradMatchConfig(output_dir=str(tmp_path / "run"), target_examples=8, disable_tqdm=True, **tiny)
    GradMatchSynthesizer(tiny_llama, args, train_dataset=data["train"], processing_class=smollm2_tokenizer).train()
    members, nonmembers = members_and_nonmembers(tmp_path / "run", data, task)
    assert len(members[0]) == len(nonmembers[0]) == 16 and not set(members[0]) & set(nonmembers[0])
    assert members[1] == nonmembers[1] == [0] * 8 + [1] * 8
    recipe = FinetuneConfig(finetune="full", max_steps=2, eval_steps=1, batch_size=4, dev_examples=8)
    audit = AuditArguments(synthetic=f"gradmm={tmp_path / 'run'}", output=str(tmp_path / "audit.json"))
    results = run_audit(audit, recipe, loaded=(tiny_llama, smollm2_tokenizer))
    assert set(results["rows"]) == {"gradmm", "real_pool", "none"}
    assert all(0.0 <= row["mean"] <= 1.0 for row in results["rows"].values())
    assert results["rows"]["gradmm"]["training_texts"] == 4 and results["rows"]["real_pool"]["training_texts"] == 16
    assert "max_longest_common_ngram" in results["rows"]["gradmm"]["memorisation"]
    assert (tmp_path / "audit.md").read_text().startswith("Membership inference")


@pytest.mark.slow
def test_real_model_dp_synthesis_and_audit(smollm2, rotten_tomatoes, tmp_path):
    """SmolLM2: a DP run reports the accountant's sigma and a (tiny) target signal-to-noise ratio;
    the audit fine-tunes on its texts and scores members against non-members."""
    from hf_gradmm.evaluation import FinetuneConfig
    from hf_gradmm.evaluation.audit import AuditArguments, run_audit
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    model, tok = smollm2
    data, _ = rotten_tomatoes
    args = GradMatchConfig(
        init="lm",
        output_dir=str(tmp_path / "dp"),
        dp_epsilon=16.0,
        seq_len=8,
        heldout_examples=0,
        target_examples=16,
        per_class=2,
        texts_per_round=2,
        outer_steps=1,
        inner_steps=2,
        refine_steps=2,
        projection_beams=1,
        disable_tqdm=True,
    )
    result = GradMatchSynthesizer(model, args, train_dataset=data["train"], processing_class=tok).train()
    dp = result.metrics["dp"]
    assert dp["noise_multiplier"] == pytest.approx(noise_multiplier(16.0, 1e-5))
    assert dp["noise_std"] == pytest.approx(dp["noise_multiplier"] * 1.0 / 16)
    for stats in result.metrics["dp_local"]["per_checkpoint"]["theta0"].values():
        # 28.3M coordinates of noise at std 0.0215 against a clipped mean of norm <= 1.
        assert stats["noise_norm"] == pytest.approx(dp["noise_std"] * math.sqrt(49152 * 576), rel=0.01)
        assert stats["clipped_mean_norm"] <= 1.0 + 1e-6 and stats["signal_to_noise"] < 0.02
    recipe = FinetuneConfig(finetune="lora", max_steps=2, eval_steps=2, dev_examples=16)
    audit = AuditArguments(synthetic=f"dp16={tmp_path / 'dp'}", references="none", output=str(tmp_path / "a.json"))
    rows = run_audit(audit, recipe, loaded=(model, tok))["rows"]
    assert set(rows) == {"dp16", "none"} and rows["dp16"]["dp"]["epsilon"] == 16.0
    assert all(0.0 <= row["mean"] <= 1.0 for row in rows.values())
