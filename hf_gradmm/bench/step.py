"""``hf-gradmm bench step``: one x-step, the authors' formulation against ours, in one run.

(a) the authors' formulation: autograd gradient of the lm_head weight with ``create_graph``,
cosine to the target, double backward, eager attention (the JSON keys call it ``reference``);
(b) ours: the closed form of ``gradients.py``, one first-order backward, SDPA attention.
Both differentiate the same f(X) at the same X; the report gives seconds per step, their
ratio, how far apart the two X-gradients are, and our achieved FLOP/s (counted by
``torch.utils.flop_counter``) against a torch matmul timed in the same run.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hf_gradmm.bench.arguments import BenchArguments
from hf_gradmm.distributed import device as compute_device
from hf_gradmm.engine.gradients import class_target, model_state_kept, prepare_matched
from hf_gradmm.engine.objective import MatchingObjective, template_parts
from hf_gradmm.tasks import label_token_ids, load_task


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: time it to its end


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def matmul_peak_gflops(
    dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5, device: torch.device | str = "cpu"
) -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    return 2 * n**3 / _median_seconds(lambda: a @ b, repeats) / 1e9


def _setup(model, tokenizer, task, args: BenchArguments, device):
    """A positive-class lm_head target from 16 real texts, its objective, a random X and the labels."""
    data, task = load_task(task)
    label = 1 if task.num_labels > 1 else 0
    token = label_token_ids(task, tokenizer)[label]
    texts = [t for t, y in zip(data["train"]["text"][:400], data["train"]["label"][:400]) if y == label][:16]
    matched = prepare_matched(model, "lm_head")
    target = class_target(model, tokenizer, matched, [task.format_prompt(t) for t in texts], token)
    lead, tail = template_parts(task.template, tokenizer)
    objective = MatchingObjective(model, matched, target, token, lead, tail, "cos")
    torch.manual_seed(0)
    emb = model.get_input_embeddings().weight.detach()
    x0 = torch.randn(args.batch, args.seq_len, emb.shape[1]).to(device)
    x0 = x0 / x0.norm(dim=-1, keepdim=True) * emb.norm(dim=-1).mean()
    labels = torch.full((args.batch,), token, device=device)
    return objective, target, x0, labels, (lead, tail)


def _gradient_at(objective, x0: torch.Tensor):
    """Our step: the closed-form f and one first-order backward; returns (dX, f)."""
    x = x0.clone().requires_grad_(True)
    f, _ = objective.distance(x)
    f.backward()
    return x.grad, float(f.detach())


def bench_step(model, tokenizer, task, args: BenchArguments) -> dict:
    """Time one x-step both ways on the same X and target; see the module docstring."""
    device = compute_device(args.use_cpu)
    model.to(device)
    with model_state_kept(model):  # flags and attention mode go back as they were
        objective, target, x0, labels, template = _setup(model, tokenizer, task, args, device)
        g_target = target.tensors[0]

        def authors():
            x = x0.clone().requires_grad_(True)
            logits = model(inputs_embeds=objective.inputs(x), use_cache=False).logits[:, -1, :]
            loss = F.cross_entropy(logits.float(), labels)
            (grad,) = torch.autograd.grad(loss, model.lm_head.weight, create_graph=True)
            f = 1 - F.cosine_similarity(grad.reshape(-1), g_target.reshape(-1), dim=0)
            f.backward()
            return x.grad, float(f.detach())

        model.lm_head.weight.requires_grad_(True)  # the authors' step differentiates w.r.t. it
        model.set_attn_implementation("eager")
        ref_grad, ref_f = authors()
        reference_s = _median_seconds(authors, args.repeats)
        model.set_attn_implementation("sdpa")
        model.lm_head.weight.requires_grad_(False)
        fast_grad, fast_f = _gradient_at(objective, x0)
        fast_s = _median_seconds(lambda: _gradient_at(objective, x0), args.repeats)
        with FlopCounterMode(display=False) as counter:
            _gradient_at(objective, x0)
        flops = counter.get_total_flops()
    report = {
        "model": getattr(model.config, "_name_or_path", ""),
        "device": str(device),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": torch.get_num_threads(),
        "reference_s": reference_s,
        "fast_s": fast_s,
        "ratio": reference_s / fast_s,
        "max_rel_diff": float((fast_grad - ref_grad).abs().max() / ref_grad.abs().max()),
        "distance_reference": ref_f,
        "distance_fast": fast_f,
        "step_gflop": flops / 1e9,
        "achieved_gflops": flops / fast_s / 1e9,
        "matmul_peak_gflops": matmul_peak_gflops(torch.float32, device=device),
    }
    if args.bf16:
        bf16 = _bf16(model, objective, target, template, x0, ref_grad, reference_s, flops, args, device)
        report.update(bf16)
    return report


def _bf16(model, objective, target, template, x0, ref_grad, reference_s: float, flops: int, args, device) -> dict:
    """Our step with the model in bfloat16 (then back in float32), against the fp32 authors' gradient."""
    model.to(torch.bfloat16)
    try:
        objective_bf16 = MatchingObjective(model, objective.matched, target, objective.label_token, *template, "cos")
        x_bf16 = x0.to(torch.bfloat16)
        bf16_grad = _gradient_at(objective_bf16, x_bf16)[0]
        seconds = _median_seconds(lambda: _gradient_at(objective_bf16, x_bf16), args.repeats)
        return {
            "fast_bf16_s": seconds,
            "ratio_bf16": reference_s / seconds,
            "max_rel_diff_bf16": float((bf16_grad.float() - ref_grad).abs().max() / ref_grad.abs().max()),
            "achieved_gflops_bf16": flops / seconds / 1e9,
            "matmul_peak_gflops_bf16": matmul_peak_gflops(torch.bfloat16, device=device),
        }
    finally:
        model.to(torch.float32)
