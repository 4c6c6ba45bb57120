"""Per-row state (engine/objective.py Rows, engine/suffix.py): swapped batches and changed rows are
scored without running what did not change, and give what full passes give; the round that uses
them makes the texts the 0.1.0 round (bench/baseline.py) makes."""

from __future__ import annotations

import pytest
import torch

from hf_gradmm.bench.baseline import BASELINE
from hf_gradmm.engine.objective import MatchingObjective
from hf_gradmm.engine.round import run_round

pytestmark = pytest.mark.usefixtures("models_restored")


def _swaps(ids: torch.Tensor, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` single-token swaps of random rows at random positions (words from the batch itself)."""
    g = torch.Generator().manual_seed(seed)
    at = torch.randint(len(ids), (count,), generator=g)
    new = ids[at].clone()
    positions = torch.randint(ids.shape[1], (count,), generator=g)
    new[torch.arange(count), positions] = ids.flatten()[torch.randint(ids.numel(), (count,), generator=g)]
    return at, new


def _full_values(objective, ids, at, new) -> torch.Tensor:
    out = []
    for r, row in zip(at.tolist(), new):
        trial = ids.clone()
        trial[r] = row
        out.append(objective.value(trial))
    return torch.tensor(out)


@pytest.mark.parametrize(
    ("distance", "centering"), [("cos", "off"), ("l2", "off"), ("cos", "common"), ("l1+l2", "off")]
)
def test_swapped_batches_score_as_full_passes(tiny_llama, smollm2_tokenizer, small_setup, distance, centering):
    """The closed form's swap distances (one (B + K) x V x d product) equal full passes of each swapped batch."""
    prepared, _ = small_setup(tiny_llama, smollm2_tokenizer, distance=distance, target_centering=centering)
    objective = prepared.objectives[1]
    assert isinstance(objective, MatchingObjective)
    ids = torch.randint(100, 5000, (4, 6), generator=torch.Generator().manual_seed(3))
    at, new = _swaps(ids, 7)
    rows = objective.rows(ids)
    values = objective.swap_values(rows, at, objective.rows(new))
    assert torch.allclose(values, _full_values(objective, ids, at, new), rtol=1e-4, atol=1e-7)
    assert objective.rows_value(rows) == pytest.approx(objective.value(ids), rel=1e-5)


def test_changed_rows_run_from_their_first_change(tiny_llama, smollm2_tokenizer, small_setup):
    """A row that differs from its base row only from position p on runs from p (its base row's
    keys and values before it) and gets the factors and keys a full pass gives."""
    prepared, _ = small_setup(tiny_llama, smollm2_tokenizer)
    objective = prepared.objectives[0]
    ids = torch.randint(100, 5000, (4, 6), generator=torch.Generator().manual_seed(5))
    at, new = _swaps(ids, 9)
    new[0] = ids[at[0]]  # no change at all: only the last position runs
    base = objective.rows(ids)
    suffix, full = objective.rows_from(base, at, new), objective.rows(new)
    assert objective.suffix_ok is True  # checked once against a full pass, then trusted
    for got, want in zip(suffix.factors, full.factors):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    assert torch.allclose(suffix.cache, full.cache, rtol=1e-4, atol=1e-5)
    assert torch.equal(suffix.ids, new)


@pytest.mark.parametrize("checkpoints", ["theta0", "trajectory:2"])
def test_round_makes_the_baseline_texts(tiny_llama, smollm2_tokenizer, small_setup, checkpoints):
    """The engine's round and the 0.1.0 round (every row recomputed) run the same search: the same
    ids, distances and NLLs, also at two LoRA checkpoints."""
    prepared, config = small_setup(
        tiny_llama,
        smollm2_tokenizer,
        outer_steps=2,
        inner_steps=2,
        refine_steps=6,
        target_checkpoints=checkpoints,
        trajectory_steps=4,
    )
    ours, old = run_round(prepared, config, 0, 1, 3), run_round(prepared, config, 0, 1, 3, parts=BASELINE)
    assert ours.token_ids == old.token_ids
    assert ours.final_distance == pytest.approx(old.final_distance, rel=1e-5)
    assert ours.admm_distance == pytest.approx(old.admm_distance, rel=1e-5)
    assert ours.nll == pytest.approx(old.nll, rel=1e-5)


def test_real_model_round_makes_the_baseline_texts(smollm2, small_setup):
    """On SmolLM2 the packed suffix passes reproduce full passes (the once-per-model check
    passes), and a short round makes the 0.1.0 round's texts."""
    model, tokenizer = smollm2
    prepared, config = small_setup(model, tokenizer, seq_len=10, outer_steps=1, inner_steps=2, refine_steps=4)
    ours, old = run_round(prepared, config, 0, 0, 3), run_round(prepared, config, 0, 0, 3, parts=BASELINE)
    assert prepared.objectives[0].suffix_ok is True
    assert ours.texts == old.texts
    assert ours.final_distance == pytest.approx(old.final_distance, rel=1e-5)


@pytest.mark.parametrize(("checkpoints", "distance"), [("theta0", "cos"), ("theta0", "l2"), ("trajectory:2", "cos")])
def test_one_rows_gradient_is_that_rows_part_of_the_batch_gradient(
    tiny_llama, smollm2_tokenizer, small_setup, checkpoints, distance
):
    """``row_grad`` (one row's forward and backward, the others at their kept factors) gives the
    row's slice of the whole batch's gradient: what refine_gradients='changed' relies on."""
    prepared, _ = small_setup(
        tiny_llama, smollm2_tokenizer, distance=distance, target_checkpoints=checkpoints, trajectory_steps=4
    )
    objective = prepared.objectives[0]
    ids = torch.randint(100, 5000, (4, 6), generator=torch.Generator().manual_seed(7))
    _, full = objective.value_and_grad(ids)
    rows = objective.rows(ids)
    for row in range(len(ids)):
        got = objective.row_grad(rows, row)
        assert got.shape == (1, *full.shape[1:])
        assert torch.allclose(got[0], full[row], rtol=1e-4, atol=1e-5 * float(full.abs().max()))


def test_changed_row_gradients_keep_every_distance_exact(tiny_llama, smollm2_tokenizer, small_setup):
    """With refine_gradients='changed' the search differs, but the round's final distance is the
    exact distance of its texts, never above the ADMM batch's, and the texts use allowed tokens."""
    prepared, config = small_setup(
        tiny_llama, smollm2_tokenizer, outer_steps=1, inner_steps=2, refine_steps=12, refine_gradients="changed"
    )
    record = run_round(prepared, config, 0, 1, 3)
    ids = torch.tensor(record.token_ids)
    assert record.final_distance == pytest.approx(prepared.objectives[1].value(ids), rel=1e-4)
    assert record.final_distance <= record.admm_distance
    assert bool(prepared.allowed[ids].all())
