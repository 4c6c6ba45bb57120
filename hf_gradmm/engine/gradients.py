"""Gradient maths: the closed form of the output projection, per-example hooks, class targets.

The loss of one example is the cross-entropy of its label token predicted at the last
position. For the output projection (``lm_head``, weight W of shape V x d) one example's
gradient is the rank-one matrix ``a h^T``: ``h`` the last hidden state (the projection's
input), ``a = dL/dz`` the gradient at the projection's output (``p - e_y`` without logit
soft-capping). A batch's mean gradient is ``A^T H / B``, so inner products and norms need only
``B x B`` Gram matrices and one ``G h`` product, never a V x d matrix per step:

    <grad, G>     = (1/B) sum_i a_i . (G h_i)
    ||grad||^2    = (1/B^2) sum_ij (a_i . a_j)(h_i . h_j)

The matching distance (engine/objective.py) is then an ordinary differentiable function of
``h`` and ``z``: one first-order backward pass through the model (default SDPA attention works). Other parameter
sets (a block's linear layers, LoRA adapters) use per-example gradients from Opacus-style
hooks for targets and autograd double backward for the x-step.

Only the output projection *use* of W counts, also when W is tied to the input embeddings:
the hooks sit on the lm_head module, so they see exactly that use, for token ids and input
embeddings alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hf_gradmm.distributed import gather
from hf_gradmm.lm import encode_prompts

LM_HEAD = "lm_head"


def output_projection(model: nn.Module) -> nn.Linear:
    """The model's output projection; a clear error for models without one."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no linear output projection (get_output_embeddings() returned "
            f"{type(head).__name__}); GRADMM needs a causal LM with an lm_head (AutoModelForCausalLM)."
        )
    return head


def _logits(model: nn.Module, z: Tensor) -> Tensor:
    """The model's logits from the projection output ``z`` (final soft-capping, where a model has it)."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(z / cap) * cap if cap else z


# ---------------------------------------------------------------------------------------------
# Forward passes at the last position
# ---------------------------------------------------------------------------------------------


def last_hidden(model: nn.Module, input_ids=None, inputs_embeds=None, attention_mask=None, return_logits: bool = False):
    """Last-position input of the output projection, (B, d); differentiable w.r.t. ``inputs_embeds``.

    Sequences must be left-padded so the last position is every sequence's last real token.
    Only the last position's logits are computed unless ``return_logits`` (then ``(h, logits)``
    with logits at every position).
    """
    head = output_projection(model)
    seen: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    try:
        out = model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            logits_to_keep=0 if return_logits else 1,
            use_cache=False,
        )
    finally:
        handle.remove()
    h = seen[-1][:, -1, :]
    return (h, out.logits) if return_logits else h


def output_factors(model: nn.Module, h: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, z)``: per-example ``dL_i/dz_i`` (B, V) and the projection output ``z = W h`` (B, V).

    ``a = p - e_y`` (times the soft-cap derivative where a model caps its logits), written
    out so that it is an ordinary differentiable function of ``h``: no double backward.
    """
    head = output_projection(model)
    z = F.linear(h, head.weight.detach(), None if head.bias is None else head.bias.detach())
    p = torch.softmax(_logits(model, z).float(), dim=-1)
    a = p - F.one_hot(labels, p.shape[-1]).to(p.dtype)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        a = a * (1 - torch.tanh(z.float() / cap) ** 2)
    return a, z


# ---------------------------------------------------------------------------------------------
# Matched parameters and per-example gradients through hooks (Opacus style)
# ---------------------------------------------------------------------------------------------


@dataclass
class MatchedModules:
    """The linear modules whose weights (and biases) the gradient is matched on."""

    names: list[str]
    modules: list[nn.Linear]

    @property
    def is_lm_head(self) -> bool:
        return self.names == [LM_HEAD]

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in (m.weight, m.bias) if p is not None]


def select_matched(model: nn.Module, spec: str) -> MatchedModules:
    """Resolve ``spec``: ``lm_head``, ``peft`` (a PEFT model's trainable adapter layers), or a
    regular expression over module names (e.g. ``model\\.layers\\.29\\.``) selecting linear layers.
    """
    if spec == LM_HEAD:
        return MatchedModules([LM_HEAD], [output_projection(model)])
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if spec == "peft":
        chosen = {n: m for n, m in linears.items() if "lora_" in n}
        if not chosen:
            raise ValueError("matched_params='peft' but the model has no LoRA layers; wrap it with peft first.")
    else:
        try:
            pattern = re.compile(spec)
        except re.error as err:
            raise ValueError(f"matched_params {spec!r} is not a valid regular expression: {err}") from None
        # A PEFT model's adapter layers are not base parameters: 'peft' selects those.
        chosen = {n: m for n, m in linears.items() if pattern.search(n) and "lora_" not in n}
        if not chosen:
            sample = ", ".join(list(linears)[-6:])
            raise ValueError(f"matched_params {spec!r} selects no linear layer; module names look like: {sample}.")
    names = sorted(chosen)
    return MatchedModules(names, [chosen[n] for n in names])


def prepare_matched(model: nn.Module, spec: str) -> MatchedModules:
    """Freeze ``model`` and resolve ``spec`` on it for matching: the general path differentiates
    w.r.t. the matched parameters (so they require grad) and needs eager attention (double
    backward through SDPA is not implemented on CPU); the lm_head closed form needs neither."""
    model.requires_grad_(False)
    matched = select_matched(model, spec)
    for p in matched.parameters():
        p.requires_grad_(not matched.is_lm_head)
    if not matched.is_lm_head and getattr(model.config, "_attn_implementation", None) not in (None, "eager"):
        model.set_attn_implementation("eager")
    return matched


@contextmanager
def model_state_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Restore ``model``'s requires-grad flags and attention implementation on exit, whatever the
    block changed (a synthesis or a benchmark hands the model back as it was given)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    attn = getattr(model.config, "_attn_implementation", None)
    try:
        yield model
    finally:
        if attn is not None and getattr(model.config, "_attn_implementation", None) != attn:
            model.set_attn_implementation(attn)
        for p, flag in flags:
            p.requires_grad_(flag)


class PerExampleGrads:
    """Context manager capturing per-example gradients of linear layers with module hooks.

    Inside the block, run a forward pass and ``backward`` of a *summed* per-example loss; the
    forward hook keeps each layer's input and hooks its output for the output gradient, and
    :meth:`grads` returns, per parameter, a tensor of per-example gradients (B, *shape).
    """

    def __init__(self, modules: Iterable[nn.Linear]):
        self.modules = list(modules)
        self.activations: dict[nn.Module, Tensor] = {}
        self.backprops: dict[nn.Module, Tensor] = {}
        self._handles = []

    def __enter__(self) -> PerExampleGrads:
        for module in self.modules:
            self._handles.append(module.register_forward_hook(self._capture))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _capture(self, module, inputs, output) -> None:
        # The input now; the output's gradient when backward reaches it (a tensor hook fires
        # even when backward is restricted to a few parameters, unlike a module backward hook).
        self.activations[module] = inputs[0].detach()
        if output.requires_grad:
            output.register_hook(lambda grad: self.backprops.__setitem__(module, grad.detach()))

    def grads(self) -> list[Tensor]:
        """Per-example gradients, one (B, *param.shape) tensor per matched parameter."""
        out = []
        for module in self.modules:
            act, back = self.activations[module], self.backprops[module]
            if act.dim() == 2:  # (B, features): one position per example
                act, back = act[:, None], back[:, None]
            out.append(torch.einsum("bso,bsi->boi", back, act))
            if module.bias is not None:
                out.append(back.sum(dim=1))
        return out


# ---------------------------------------------------------------------------------------------
# Class targets: the mean per-example gradient over a class's real examples
# ---------------------------------------------------------------------------------------------


@dataclass
class ClassTarget:
    """Target gradient of one class: a list of tensors (one per matched parameter)."""

    tensors: list[Tensor]
    count: int
    clipped: int = 0  # examples whose gradient norm exceeded the clip norm (clip_norm > 0 only)


def lm_head_example_factors(model: nn.Module, batch: dict[str, Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, h)`` of each real example for the output projection: its gradient is ``a h^T``.

    The model body runs without grad; the projection then runs under the hooks, which
    capture its input ``h`` and its output gradient ``a`` (= dL_i/dz_i of the summed loss).
    """
    head = output_projection(model)
    with torch.no_grad():
        h = last_hidden(model, batch["input_ids"], attention_mask=batch["attention_mask"])
    h = h.detach().requires_grad_()
    with PerExampleGrads([head]) as capture, torch.enable_grad():
        z = head(h)
        F.cross_entropy(_logits(model, z).float(), labels, reduction="sum").backward(inputs=[h])
    return capture.backprops[head], capture.activations[head]


def example_gradients(
    model: nn.Module, matched: MatchedModules, batch: dict[str, Tensor], labels: Tensor
) -> list[Tensor]:
    """Per-example gradients (B, *shape) of the matched (non-lm_head) parameters for real prompts."""
    params = matched.parameters()
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        with PerExampleGrads(matched.modules) as capture, torch.enable_grad():
            out = model(**batch, use_cache=False)
            logits = out.logits[:, -1, :].float()
            F.cross_entropy(logits, labels, reduction="sum").backward(inputs=params)
        return capture.grads()
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
            p.grad = None


@torch.no_grad()
def _accumulate(total: list[Tensor] | None, parts: list[Tensor]) -> list[Tensor]:
    return parts if total is None else [t + p for t, p in zip(total, parts)]


def class_target(
    model: nn.Module,
    tokenizer,
    matched: MatchedModules,
    prompts: list[str],
    label_id: int,
    batch_size: int = 16,
    shard: tuple[int, int] = (0, 1),
    clip_norm: float = 0.0,
) -> ClassTarget:
    """Mean per-example gradient over ``prompts`` (all of class ``label_id``), streamed in batches.

    Memory holds one running sum, not one gradient per example. For ``lm_head`` each batch
    contributes ``A^T H`` (a V x B by B x d product).

    ``shard=(rank, processes)``: this process computes every ``processes``-th batch; the batches'
    contributions are gathered and summed in batch order on every process, so the target is
    bitwise the one-process target. For ``lm_head`` the contributions travel in factored form,
    ``(A, H)`` per batch ((V + d) x B numbers instead of V x d).

    ``clip_norm > 0`` (differential privacy): each example's gradient is scaled to norm at most
    ``clip_norm`` before the sum; for ``lm_head`` its norm is ``||a|| ||h||`` (rank one), so the
    factor applies to ``a`` and nothing V x d is formed per example.
    """
    if not prompts:
        raise ValueError("class_target needs at least one real example.")
    rank, processes = shard
    device = output_projection(model).weight.device

    def dense(part) -> list[Tensor]:
        return [part[0].T @ part[1]] if matched.is_lm_head else part

    total: list[Tensor] | None = None
    clipped = 0
    mine = {}  # batch index -> contribution, kept only when it has to be gathered
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        if index % processes != rank:
            continue
        chunk = prompts[start : start + batch_size]
        batch = encode_prompts(tokenizer, chunk).to(device)
        labels = torch.full((len(chunk),), label_id, dtype=torch.long, device=device)
        if matched.is_lm_head:
            a, h = lm_head_example_factors(model, batch, labels)
            if clip_norm:
                factor = _clip_factors(a.float().norm(dim=1) * h.float().norm(dim=1), clip_norm)
                clipped += int((factor < 1).sum())
                a = a * factor[:, None].to(a.dtype)
            part = (a, h)
        else:
            grads = example_gradients(model, matched, batch, labels)
            if clip_norm:
                norms = torch.sqrt(sum(g.float().flatten(1).pow(2).sum(1) for g in grads))
                factor = _clip_factors(norms, clip_norm)
                clipped += int((factor < 1).sum())
                grads = [g * factor.view(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in grads]
            part = [g.sum(0) for g in grads]
        if processes == 1:
            total = _accumulate(total, dense(part))
        else:
            mine[index] = [t.cpu() for t in part]  # sent as CPU tensors, whatever the device
    if processes > 1:
        parts = {i: part for shard_parts in gather(mine) for i, part in shard_parts.items()}
        for index in sorted(parts):  # the one-process order: the same sum, bit for bit
            total = _accumulate(total, dense([t.to(device) for t in parts[index]]))
        clipped = sum(gather(clipped))
    return ClassTarget([t / len(prompts) for t in total], len(prompts), clipped)


def _clip_factors(norms: Tensor, clip_norm: float) -> Tensor:
    """Per-example scale ``min(1, C / ||g||)`` (0-norm gradients stay as they are)."""
    return torch.clamp(clip_norm / norms.clamp_min(1e-12), max=1.0)
