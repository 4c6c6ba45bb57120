"""Selection from a candidate pool (engine/select.py, ``init='select'``), the ``none`` schedule, and
single trajectory checkpoints (``trajectory:K/i``)."""

from __future__ import annotations

import pytest
import torch
from conftest import round_draws

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.round import run_round
from hf_gradmm.engine.select import select_batch

pytestmark = pytest.mark.usefixtures("models_restored")


def _batch_value(objective, ids: torch.Tensor) -> float:
    return objective.rows_value(objective.rows(ids))


@pytest.mark.parametrize("checkpoints", ["theta0", "trajectory:2"])
def test_selection_is_a_local_optimum_of_the_exact_distance(tiny_llama, smollm2_tokenizer, small_setup, checkpoints):
    """The chosen batch: distinct candidates, no worse than the first B, and no single slot can be
    given any other unchosen candidate for a lower exact distance (full passes check it)."""
    prepared, _ = small_setup(tiny_llama, smollm2_tokenizer, target_checkpoints=checkpoints, trajectory_steps=4)
    objective = prepared.objectives[0]
    pool = torch.randint(100, 5000, (12, 6), generator=torch.Generator().manual_seed(1))
    chosen = select_batch(objective, objective.rows(pool, cache=False), 3)
    assert len(set(chosen.tolist())) == 3
    value = _batch_value(objective, pool[chosen])
    assert value <= _batch_value(objective, pool[:3]) + 1e-6
    for slot in range(3):
        for other in set(range(12)) - set(chosen.tolist()):
            trial = chosen.clone()
            trial[slot] = other
            assert _batch_value(objective, pool[trial]) >= value - 1e-5


def test_selection_refuses_a_pool_smaller_than_the_batch(tiny_llama, smollm2_tokenizer, small_setup):
    prepared, _ = small_setup(tiny_llama, smollm2_tokenizer)
    with pytest.raises(ValueError, match="select_pool"):
        objective = prepared.objectives[0]
        select_batch(objective, objective.rows(torch.randint(100, 5000, (2, 6)), cache=False), 3)


def test_select_round_keeps_the_lm_texts_it_chose(tiny_llama, smollm2_tokenizer, small_setup):
    """init 'select' + schedule 'none': the round's texts are rows of the LM's own draws, token for
    token, its distance is the chosen batch's, and nothing moved them (initial = final)."""
    prepared, config = small_setup(tiny_llama, smollm2_tokenizer, init="select", schedule="none", select_pool=8)
    record = run_round(prepared, config, 0, 1, 3)
    drawn = round_draws(prepared, config, 1, 8)
    assert all(row in drawn.tolist() for row in record.token_ids)
    assert record.initial_distance == record.final_distance == record.admm_distance
    chosen = select_batch(prepared.objectives[1], prepared.objectives[1].rows(drawn, cache=False), 3)
    assert record.token_ids == drawn[chosen].tolist()
    assert record.final_distance == pytest.approx(_batch_value(prepared.objectives[1], drawn[chosen]), rel=1e-5)


def test_lm_init_without_steps_is_the_no_target_control(tiny_llama, smollm2_tokenizer, small_setup):
    """init 'lm' + schedule 'none': the model's own draws, unmatched (the no-target control)."""
    prepared, config = small_setup(tiny_llama, smollm2_tokenizer, schedule="none")
    record = run_round(prepared, config, 0, 0, 3)
    drawn = round_draws(prepared, config, 0, 3)
    assert record.token_ids == drawn.tolist()


def test_one_trajectory_checkpoint_scores_as_its_part_of_the_full_trajectory(
    tiny_llama, smollm2_tokenizer, small_setup
):
    """``trajectory:2/2`` trains the same 2-checkpoint fine-tuning and matches only its end: the
    distance is that checkpoint's part of ``trajectory:2``."""
    whole, _ = small_setup(tiny_llama, smollm2_tokenizer, target_checkpoints="trajectory:2", trajectory_steps=4)
    ids = torch.randint(100, 5000, (3, 6), generator=torch.Generator().manual_seed(2))
    checkpoint, part = whole.objectives[1].parts[1]
    with checkpoint.active():
        want = part.value(ids)
    last, _ = small_setup(
        tiny_llama,
        smollm2_tokenizer,
        target_checkpoints="trajectory:2/2",
        trajectory_steps=4,
    )
    assert [c.name for c in last.checkpoints] == ["trajectory:2/2"]
    assert last.checkpoint_report["trajectory_k2_reused"] is True  # the same fine-tuning, saved by the first
    assert last.objectives[1].value(ids) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(target_checkpoints="trajectory:4/5"), "1 <= i <= K"),
        (dict(target_checkpoints="trajectory:4/x"), "trajectory:K/i"),
        (dict(init="select", select_pool=4, select_margin_keep=0), "--select-pool to at least 10"),
        (dict(schedule="none", outer_steps=2), "inner_steps"),
    ],
)
def test_bad_selection_settings_are_refused_with_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        GradMatchConfig(**fields)


def test_real_model_selection_matches_closer_than_the_lm_draws(smollm2, small_setup):
    """On SmolLM2: the 4 texts chosen from 24 of the model's own draws match the class target
    more closely than the first 4 draws (what init 'lm' would start from), and read as written."""
    model, tokenizer = smollm2
    prepared, config = small_setup(model, tokenizer, texts_per_round=4, per_class=4, seq_len=10,
        init="select", schedule="none", select_pool=24, select_margin_keep=0, target_examples=16,
    )  # fmt: skip
    record = run_round(prepared, config, 0, 1, 4)
    drawn = round_draws(prepared, config, 1, 24)
    assert record.final_distance < _batch_value(prepared.objectives[1], drawn[:4])
    assert all(row in drawn.tolist() for row in record.token_ids)
    assert record.texts == [t.strip() for t in tokenizer.batch_decode(torch.tensor(record.token_ids))]
