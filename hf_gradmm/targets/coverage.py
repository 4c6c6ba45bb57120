"""Coverage groups: each class's real target examples cut into B groups of similar gradients.

A class target is the mean gradient of its real examples, so a batch that matches it matches
the class's centre; a class with several modes (reviews that praise the acting, the plot, the
price of a ticket) can be matched by B texts that all sit near the centre. Cutting the examples
into B groups by their own gradients and asking text j of a batch to also match group j's mean
(``coverage_weight``, engine/select.py) makes a batch stand for the class's modes. For lm_head an
example's gradient is ``a h^T``, so the cosine between two examples is ``cos(a_i, a_k) cos(h_i,
h_k)`` and the grouping runs on that n x n matrix (spectral clustering, scikit-learn, seeded by
the run's seed): nothing V x d is formed. It reads the real examples one by one, so it
is refused under differential privacy (config.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hf_gradmm.engine.gradients import lm_head_example_factors, output_projection
from hf_gradmm.engine.select import CoverageGroups
from hf_gradmm.lm import encode_prompts
from hf_gradmm.tasks import TaskSpec


def check_coverage(args) -> None:
    """Refuse ``coverage_weight > 0`` where the groups cannot be built or used, naming the fix
    (run from the config's checks, before any model loads; under DP it is one of
    targets/privacy.py's leaking options)."""
    if args.coverage_weight <= 0:
        return
    flag = f"--coverage-weight {args.coverage_weight:g}"
    problems = []
    if args.init != "select":
        problems.append(f"it weighs the selection's choice, so it needs --init select (got {args.init!r})")
    if args.matched_params != "lm_head":
        problems.append("its groups are built from lm_head gradients: use --matched-params lm_head")
    if args.target_checkpoints.strip() != "theta0":
        problems.append("its groups are taken at theta0: use --target-checkpoints theta0")
    if args.target_control != "off" or args.target_centering != "off":
        problems.append(
            "its groups are of the class's own, uncentred gradients: use --target-control off and "
            "--target-centering off"
        )
    if args.target_examples < args.texts_per_round:
        problems.append(
            f"it cuts --target-examples {args.target_examples} into --texts-per-round "
            f"{args.texts_per_round} groups: give at least that many target examples"
        )
    if problems:
        raise ValueError(f"{flag} is refused: " + "; ".join(problems) + ".")


def example_factors(model, tokenizer, prompts: list[str], label_id: int, batch_size: int) -> tuple[Tensor, Tensor]:
    """``(a, h)`` of every prompt (its lm_head gradient is ``a h^T``), in batches of ``batch_size``."""
    device = output_projection(model).weight.device
    parts = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        labels = torch.full((len(chunk),), label_id, dtype=torch.long, device=device)
        a, h = lm_head_example_factors(model, encode_prompts(tokenizer, chunk).to(device), labels)
        parts.append((a.detach().float(), h.detach().float()))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def gradient_groups(a: Tensor, h: Tensor, groups: int, seed: int = 0) -> Tensor:
    """(n,) group of each example, 0 .. ``groups`` - 1, the largest group first: spectral clustering
    (scikit-learn, seeded) of the examples under the cosine between their gradients, negative
    cosines counted as no affinity. Agglomerative linkages were tried on SmolLM2's Rotten Tomatoes
    pool and made one group of 34-41 of the 50 examples plus outliers; spectral groups hold 1-11."""
    from sklearn.cluster import SpectralClustering  # here: importing the config must stay light

    if len(a) < groups:
        raise ValueError(f"{len(a)} real examples cannot be cut into {groups} coverage groups; pass more.")
    unit_a, unit_h = a / a.norm(dim=1, keepdim=True), h / h.norm(dim=1, keepdim=True)
    affinity = ((unit_a @ unit_a.T) * (unit_h @ unit_h.T)).clamp_min(0).double().cpu().numpy()
    found = SpectralClustering(n_clusters=groups, affinity="precomputed", random_state=seed)
    labels = torch.as_tensor(found.fit_predict(affinity), dtype=torch.long)
    sizes = torch.bincount(labels, minlength=groups)
    order = sorted(range(groups), key=lambda g: (-int(sizes[g]), int((labels == g).nonzero()[0])))
    rename = torch.empty(groups, dtype=torch.long)
    rename[torch.tensor(order)] = torch.arange(groups)
    return rename[labels]


def coverage_groups(
    model, tokenizer, task: TaskSpec, pool: dict, label_tokens: list[int], groups: int, batch_size: int, seed: int
) -> dict[int, CoverageGroups]:
    """Per class, its target examples' factors and their ``groups`` gradient groups (under ``model``)."""
    out = {}
    for c in range(task.num_labels):
        prompts = [task.format_prompt(t) for t in pool[c]["target"]]
        a, h = example_factors(model, tokenizer, prompts, label_tokens[c], batch_size)
        out[c] = CoverageGroups(a, h, gradient_groups(a, h, groups, seed).to(a.device))
    return out
