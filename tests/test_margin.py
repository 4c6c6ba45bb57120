"""The label-margin shortlist of the selection (``select_margin_keep``, engine/select.py): the
margins themselves, the shortlist, the refusals, and a round on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch
from conftest import round_draws

from hf_gradmm.config import GradMatchConfig
from hf_gradmm.engine.round import run_round
from hf_gradmm.engine.select import margin_shortlist, select_batch
from hf_gradmm.lm import label_margins, label_word_logprobs

pytestmark = pytest.mark.usefixtures("models_restored")


def test_shortlist_keeps_the_largest_margins_in_draw_order():
    margins = torch.tensor([0.5, -2.0, 3.0, 1.0, -0.1, 2.0])
    assert margin_shortlist(margins, 3).tolist() == [2, 3, 5]
    assert margin_shortlist(margins, 6).tolist() == list(range(6))
    with pytest.raises(ValueError, match="select_margin_keep \\(7\\) is more than the 6 candidates"):
        margin_shortlist(margins, 7)


def test_margins_are_own_label_minus_best_other(tiny_llama, smollm2_tokenizer, rotten_tomatoes):
    _, task = rotten_tomatoes
    texts, labels = ["a fine film", "dull and long", "it is a movie"], [1, 0, 0]
    logprobs = label_word_logprobs(tiny_llama, smollm2_tokenizer, task, texts)
    got = label_margins(tiny_llama, smollm2_tokenizer, task, texts, labels)
    want = torch.stack([logprobs[i, y] - logprobs[i, 1 - y] for i, y in enumerate(labels)])  # two classes
    torch.testing.assert_close(got, want)
    flipped = label_margins(tiny_llama, smollm2_tokenizer, task, texts, [1 - y for y in labels])
    torch.testing.assert_close(flipped, -want)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(select_margin_keep=5), "between --texts-per-round 10"),
        (dict(select_margin_keep=400), "and --select-pool 300"),
        (dict(select_pool=50), r"--select-margin-keep 100 \(the default\) must lie between .* --select-pool 50 "),
        (dict(select_margin_keep=-1), "--select-margin-keep \\(select_margin_keep\\) must be an integer >= 0"),
    ],
)
def test_margin_shortlist_with_what_it_cannot_use_is_refused_with_the_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        GradMatchConfig(**{"init": "select", "select_margin_keep": 100, **fields})


def test_real_model_round_chooses_among_the_plainest_texts(smollm2, small_setup):
    """On SmolLM2: the round's texts are the model's own draws, every one from the shortlist of the
    largest label margins, chosen there by the distance; at keep = B the batch is the top B by margin."""
    model, tokenizer = smollm2
    fields = dict(texts_per_round=4, per_class=4, seq_len=10, init="select", schedule="none", select_pool=24)
    prepared, config = small_setup(model, tokenizer, select_margin_keep=12, **fields)
    record = run_round(prepared, config, 0, 1, 4)
    drawn = round_draws(prepared, config, 1, 24)
    texts = [t.strip() for t in tokenizer.batch_decode(drawn, skip_special_tokens=True)]
    margins = prepared.label_margins(texts, 1)
    shortlist = margin_shortlist(margins, 12)
    assert all(row in drawn[shortlist].tolist() for row in record.token_ids)
    objective = prepared.objectives[1]
    chosen = select_batch(objective, objective.rows(drawn[shortlist], cache=False), 4)
    assert sorted(record.token_ids) == sorted(drawn[shortlist][chosen].tolist())

    control, config_b = small_setup(model, tokenizer, select_margin_keep=4, **fields)
    top = run_round(control, config_b, 0, 1, 4)
    assert sorted(top.token_ids) == sorted(drawn[margins.topk(4).indices].tolist())
    assert min(margins[margins.topk(4).indices]) >= margins.median()
