"""Coverage groups (targets/coverage.py) and the selection that covers them (engine/select.py,
``coverage_weight``): the closed-form group distances, the grouping, the weighted choice, the
refusals, and a run on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch
from conftest import round_draws

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.round import run_round
from hf_gradmm.engine.select import CoverageGroups, select_batch
from hf_gradmm.targets.coverage import gradient_groups

pytestmark = pytest.mark.usefixtures("models_restored")


def _dense_distances(groups: CoverageGroups, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The same distances from the explicit V x d gradients."""
    means = []
    for j in range(groups.count):
        members = (groups.group == j).nonzero().flatten()
        means.append(sum(torch.outer(groups.a[k].double(), groups.h[k].double()) for k in members) / len(members))
    out = torch.empty(len(a), groups.count, dtype=torch.float64)
    for i in range(len(a)):
        g = torch.outer(a[i].double(), h[i].double()).flatten()
        for j, m in enumerate(means):
            out[i, j] = 1 - torch.nn.functional.cosine_similarity(g, m.flatten(), dim=0)
    return out.float()


def test_group_distances_are_those_of_the_explicit_gradients(tiny_llama, smollm2_tokenizer, small_setup):
    prepared, _ = small_setup(tiny_llama, smollm2_tokenizer, init="select", select_pool=6, coverage_weight=0.5)
    groups = prepared.coverage[0]
    assert groups.count == 3 and len(groups.group) == 8
    ids = torch.randint(100, 5000, (5, 6), generator=torch.Generator().manual_seed(3))
    rows = prepared.objectives[0].rows(ids, cache=False)
    got = groups.distances(*rows.factors)
    torch.testing.assert_close(got, _dense_distances(groups, *rows.factors), rtol=2e-3, atol=1e-5)  # fp32 sums


def test_gradient_groups_cut_near_duplicates_together_largest_first():
    """Three bundles of near-identical gradients (sizes 4, 3, 2) come out as the three groups, in
    that order, whatever order the examples arrive in."""
    gen = torch.Generator().manual_seed(0)
    centres_a, centres_h = torch.randn(3, 40, generator=gen), torch.randn(3, 12, generator=gen)
    which = torch.tensor([1, 0, 2, 0, 1, 0, 2, 1, 0])
    a = centres_a[which] + 0.01 * torch.randn(9, 40, generator=gen)
    h = centres_h[which] + 0.01 * torch.randn(9, 12, generator=gen)
    group = gradient_groups(a, h, 3)
    assert torch.equal(group, torch.tensor([1, 0, 2, 0, 1, 0, 2, 1, 0]))
    with pytest.raises(ValueError, match="cannot be cut into 10 coverage groups"):
        gradient_groups(a, h, 10)


def test_covering_selection_is_a_local_optimum_of_the_weighted_objective(tiny_llama, smollm2_tokenizer, small_setup):
    """No single slot can take another unchosen candidate for a lower batch distance + weight x
    the slots' group distances; with the weight the slots sit closer to their groups than without."""
    weight = 0.5
    prepared, _ = small_setup(tiny_llama, smollm2_tokenizer, init="select", select_pool=6, coverage_weight=weight)
    objective, groups = prepared.objectives[0], prepared.coverage[0]
    pool = torch.randint(100, 5000, (14, 6), generator=torch.Generator().manual_seed(1))
    costs = groups.distances(*objective.rows(pool, cache=False).factors)

    def total(chosen: torch.Tensor) -> float:
        return objective.rows_value(objective.rows(pool[chosen])) + weight * float(costs[chosen, torch.arange(3)].sum())

    rows = objective.rows(pool, cache=False)
    chosen = select_batch(objective, rows, 3, coverage=groups, weight=weight)
    plain = select_batch(objective, rows, 3)
    assert len(set(chosen.tolist())) == 3
    for slot in range(3):
        for other in set(range(14)) - set(chosen.tolist()):
            trial = chosen.clone()
            trial[slot] = other
            assert total(trial) >= total(chosen) - 1e-5
    assert costs[chosen, torch.arange(3)].sum() <= costs[plain, torch.arange(3)].sum() + 1e-6
    with pytest.raises(ValueError, match="3 coverage groups for a batch of 2"):
        select_batch(objective, rows, 2, coverage=groups, weight=weight)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(init="lm"), "needs --init select"),
        (dict(dp_epsilon=1.0, seq_len=5, heldout_examples=0), "outside the DP noise"),
        (dict(target_checkpoints="trajectory:2"), "--target-checkpoints theta0"),
        (dict(matched_params="model\\.layers\\.0\\."), "--matched-params lm_head"),
        (dict(target_control="random"), "--target-control off"),
        (dict(target_examples=5), "--target-examples 5 into --texts-per-round 10"),
    ],
)
def test_coverage_with_what_it_cannot_use_is_refused_with_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        GradMatchConfig(**{"init": "select", "select_margin_keep": 0, "coverage_weight": 0.03, **fields})


def test_real_model_covering_selection_brings_each_text_to_its_group(smollm2, small_setup):
    """On SmolLM2: with coverage the round's texts are still the model's own draws, and they sit
    closer to their groups than the plain selection's texts do, at some cost in batch distance."""
    model, tokenizer = smollm2
    prepared, config = small_setup(model, tokenizer, texts_per_round=4, per_class=4, seq_len=10,
        init="select", schedule="none", select_pool=24, target_examples=16, coverage_weight=0.3,
    )  # fmt: skip
    record = run_round(prepared, config, 0, 1, 4)
    drawn = round_draws(prepared, config, 1, 24)
    assert all(row in drawn.tolist() for row in record.token_ids)
    objective, groups = prepared.objectives[1], prepared.coverage[1]
    assert sorted(torch.bincount(groups.group).tolist(), reverse=True) == torch.bincount(groups.group).tolist()
    costs = groups.distances(*objective.rows(drawn, cache=False).factors)
    chosen = torch.tensor([drawn.tolist().index(row) for row in record.token_ids])
    plain = select_batch(objective, objective.rows(drawn, cache=False), 4)
    assert costs[chosen, torch.arange(4)].mean() < costs[plain, torch.arange(4)].mean()
    assert record.final_distance >= objective.rows_value(objective.rows(drawn[plain])) - 1e-6
