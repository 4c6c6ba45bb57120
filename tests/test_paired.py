"""The paired bootstrap comparison of the evaluation (pure numpy: no model)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_gradmm.evaluation.paired import correct_array, paired_difference


def test_identical_methods_differ_by_nothing():
    rng = np.random.default_rng(0)
    one_set = (rng.random((1, 3, 200)) < 0.7).astype(float)
    steady = np.repeat(one_set, 3, axis=0)  # three sets that train alike: only the shared draws vary
    pair = paired_difference(steady, steady.copy(), resamples=300)
    assert pair["difference"] == pair["low"] == pair["high"] == 0.0
    assert (pair["sets"], pair["seeds"], pair["runs"]) == (3, 3, 9)
    varied = (rng.random((3, 3, 200)) < 0.7).astype(float)  # sets differ: each method draws its own
    pair = paired_difference(varied, varied.copy(), resamples=300)
    assert pair["difference"] == 0.0 and pair["low"] < 0 < pair["high"]


def test_a_method_right_wherever_the_reference_is_and_more_is_above_zero():
    rng = np.random.default_rng(1)
    ref = np.repeat((rng.random((1, 1, 300)) < 0.6).astype(float), 3, axis=0).repeat(3, axis=1)
    ref[1, 2, :5] = 1 - ref[1, 2, :5]  # runs differ a little
    better = ref.copy()
    better[..., :30] = 1.0  # 30 more test examples right in every run, the rest as the reference
    pair = paired_difference(better, ref, resamples=500)
    assert 0 < pair["low"] <= pair["difference"] <= pair["high"]


def test_syntheses_that_disagree_widen_the_interval():
    """Two training sets at 0.9 and 0.5 (mean 0.7) against a steady 0.6: whether the method beats the
    reference depends on which set one gets, so the interval spans 0. Resampling only the test
    examples (or only the runs of one set) would put it clearly above 0."""
    n = 400
    method = np.zeros((2, 3, n))
    method[0, :, : int(0.9 * n)] = 1
    method[1, :, : int(0.5 * n)] = 1
    ref = np.zeros((3, 3, n))
    ref[:, :, : int(0.6 * n)] = 1
    pair = paired_difference(method, ref, resamples=1000)
    assert pair["difference"] == pytest.approx(0.1)
    assert pair["low"] < 0 < pair["high"] and pair["high"] - pair["low"] > 0.3


def test_a_deterministic_method_is_compared_at_every_seed():
    zero_shot = np.ones((1, 1, 50))
    tuned = np.zeros((2, 3, 50))
    tuned[..., :25] = 1
    pair = paired_difference(zero_shot, tuned, resamples=200)
    assert pair["difference"] == pytest.approx(0.5) and pair["low"] > 0


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same test examples"):
        paired_difference(np.zeros((1, 1, 5)), np.zeros((1, 1, 6)))
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_difference(np.zeros((1, 2, 5)), np.zeros((1, 3, 5)))
    runs = [{"set": 0, "seed": 0, "correct": "101"}, {"set": 1, "seed": 1, "correct": "011"}]
    with pytest.raises(ValueError, match="do not fill a grid"):
        correct_array(runs)
    full = runs + [{"set": 0, "seed": 1, "correct": "111"}, {"set": 1, "seed": 0, "correct": "000"}]
    assert correct_array(full).tolist() == [[[1, 0, 1], [1, 1, 1]], [[0, 0, 0], [0, 1, 1]]]
