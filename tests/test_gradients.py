"""Gradient maths: closed form vs autograd, hooks vs per-example autograd, tied embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_gradmm.engine.gradients import (
    PerExampleGrads,
    class_target,
    example_gradients,
    last_hidden,
    lm_head_example_factors,
    output_factors,
    select_matched,
)
from hf_gradmm.engine.objective import flat_distance, lm_head_distance
from hf_gradmm.lm import encode_prompts

PROMPTS = [
    "A gorgeous, witty film. It was",
    "Dull and far too long. It was",
    "I laughed all the way through. It was",
    "The plot makes no sense at all. It was",
]


def _autograd_head_grad(model, embeds, labels, create_graph=False):
    """Reference: autograd gradient of lm_head.weight for a batch given as input embeddings."""
    logits = model(inputs_embeds=embeds, use_cache=False).logits[:, -1, :]
    loss = F.cross_entropy(logits.float(), labels)
    (grad,) = torch.autograd.grad(loss, model.lm_head.weight, create_graph=create_graph)
    return grad


@pytest.mark.parametrize("kind", ["cos", "l2", "l1+l2"])
def test_closed_form_distance_and_x_gradient_match_double_backward(tiny_llama, kind):
    model = tiny_llama
    torch.manual_seed(1)
    embeds = torch.randn(3, 7, model.config.hidden_size)
    labels = torch.tensor([5, 9, 5])
    target = torch.randn(model.config.vocab_size, model.config.hidden_size) * 1e-3

    x_ref = embeds.clone().requires_grad_()
    ref = flat_distance([_autograd_head_grad(model, x_ref, labels, create_graph=True)], [target], kind)
    ref.backward()

    x_fast = embeds.clone().requires_grad_()
    h = last_hidden(model, inputs_embeds=x_fast)
    a, _ = output_factors(model, h, labels)
    fast = lm_head_distance(a / 1.0, h, target, kind)  # a from a summed loss, grad = A^T H / B
    fast.backward()
    assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-6), (fast, ref)
    rel = (x_fast.grad - x_ref.grad).norm() / x_ref.grad.norm()
    assert rel < 1e-4, rel


def test_tied_embeddings_target_is_the_output_projection_use_only(tiny_llama, smollm2_tokenizer):
    """With tied weights, autograd on token ids adds the input-embedding use; the hooks do not."""
    model = tiny_llama
    assert model.lm_head.weight is model.get_input_embeddings().weight
    batch = encode_prompts(smollm2_tokenizer, PROMPTS)
    labels = torch.tensor([1109, 3309, 1109, 3309])
    a, h = lm_head_example_factors(model, batch, labels)
    hooked = a.T @ h / len(PROMPTS)

    embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
    logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits[:, -1, :]
    (output_use,) = torch.autograd.grad(F.cross_entropy(logits, labels), model.lm_head.weight)
    assert torch.allclose(hooked, output_use, atol=1e-7, rtol=1e-4)

    logits = model(**batch).logits[:, -1, :]
    (both_uses,) = torch.autograd.grad(F.cross_entropy(logits, labels), model.lm_head.weight)
    assert (both_uses - output_use).abs().max() > 1e-4  # the input use really is excluded

    target = class_target(model, smollm2_tokenizer, select_matched(model, "lm_head"), PROMPTS, 1109, batch_size=3)
    labels_all = torch.full((4,), 1109)
    a, h = lm_head_example_factors(model, batch, labels_all)
    assert torch.allclose(target.tensors[0], a.T @ h / 4, atol=1e-7, rtol=1e-4)
    assert target.count == 4


def test_hooked_per_example_grads_equal_autograd_one_by_one(tiny_llama, smollm2_tokenizer):
    model = tiny_llama
    matched = select_matched(model, r"model\.layers\.1\.(self_attn\.v_proj|mlp\.down_proj)")
    assert matched.names == ["model.layers.1.mlp.down_proj", "model.layers.1.self_attn.v_proj"]
    batch = encode_prompts(smollm2_tokenizer, PROMPTS)
    labels = torch.tensor([1109, 3309, 1109, 3309])
    per_example = example_gradients(model, matched, batch, labels)
    params = matched.parameters()
    for i in range(len(PROMPTS)):
        single = encode_prompts(smollm2_tokenizer, [PROMPTS[i]])
        logits = model(**single).logits[:, -1, :]
        expected = torch.autograd.grad(F.cross_entropy(logits, labels[i : i + 1]), params)
        for got, want in zip(per_example, expected):
            assert torch.allclose(got[i], want, atol=1e-6, rtol=1e-3)


def test_per_example_hooks_release(tiny_llama):
    head = tiny_llama.lm_head
    with PerExampleGrads([head]):
        assert head._forward_hooks
    assert not head._forward_hooks and not head._backward_hooks


def test_bad_matched_params_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="selects no linear layer"):
        select_matched(tiny_llama, r"transformer\.h\.99")
    with pytest.raises(ValueError, match="no LoRA layers"):
        select_matched(tiny_llama, "peft")
    with pytest.raises(ValueError, match="valid regular expression"):
        select_matched(tiny_llama, "([")


def test_model_without_output_projection_is_refused(tiny_llama):
    from hf_gradmm.engine.gradients import output_projection

    with pytest.raises(ValueError, match="no linear output projection"):
        output_projection(tiny_llama.model)


@pytest.mark.parametrize("spec", ["lm_head", r"model\.layers\.1\.mlp\."])
def test_prompts_value_of_a_padded_batch_is_the_distance_of_its_mean_gradient(tiny_llama, smollm2_tokenizer, spec):
    """Real texts of different lengths, left-padded in one batch: their distance is that of the mean
    of each text's own gradient (computed unpadded, one at a time), for the closed form and for a block."""
    from hf_gradmm.engine.gradients import model_state_kept, prepare_matched

    model, tok = tiny_llama, smollm2_tokenizer
    with model_state_kept(model):  # the shared tiny model goes back as it came (flags, attention)
        _check_prompts_value(model, tok, prepare_matched(model, spec), spec)


def _check_prompts_value(model, tok, matched, spec):
    from hf_gradmm.engine.gradients import ClassTarget
    from hf_gradmm.engine.objective import MatchingObjective

    label = tok(" good", add_special_tokens=False)["input_ids"][0]
    torch.manual_seed(3)
    target = ClassTarget([torch.randn_like(p) for p in matched.parameters()], count=1)
    empty = torch.zeros(0, dtype=torch.long)
    objective = MatchingObjective(model, matched, target, label, empty, empty, "cos")
    batch = encode_prompts(tok, PROMPTS[:3])
    assert batch["attention_mask"].float().mean() < 1  # the lengths differ: some rows are padded
    grads = []
    for prompt in PROMPTS[:3]:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.enable_grad():
            logits = model(input_ids=ids, use_cache=False).logits[:, -1, :].float()
            loss = F.cross_entropy(logits, torch.tensor([label]))
            params = matched.parameters() if spec != "lm_head" else [model.lm_head.weight]
            if spec == "lm_head":  # the output projection's own use only (embeddings are tied)
                a, h = lm_head_example_factors(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                               torch.tensor([label]))  # fmt: skip
                grads.append([a.T @ h])
                continue
            grads.append(list(torch.autograd.grad(loss, params)))
    mean = [torch.stack(parts).mean(0) for parts in zip(*grads)]
    assert objective.prompts_value(batch) == pytest.approx(
        float(flat_distance(mean, objective.targets, "cos")), abs=1e-5
    )
