"""Control targets: runs that test whether the matching, not the LM, is what trains a model.

A synthesis with ``target_control`` set is a control, not data to publish: every class's texts are
matched to something other than its own class target, with everything else unchanged.

- ``swapped``: class c's texts are matched to class c+1's target (cyclically), still with class
  c's label word in the loss; if these texts train as well as the real run's, the target is not
  what makes them useful.
- ``random``: a random direction (Gaussian, seeded) with the norm of the class's own target.
"""

from __future__ import annotations

import torch

from hf_gradmm.engine.gradients import ClassTarget

CONTROLS = ("off", "swapped", "random")


def control_targets(targets: dict[int, ClassTarget], control: str, seed: int) -> dict[int, ClassTarget]:
    """The targets a ``control`` run matches (``off``: ``targets`` themselves)."""
    if control == "off":
        return targets
    classes = sorted(targets)
    if control == "swapped":
        return {c: targets[classes[(i + 1) % len(classes)]] for i, c in enumerate(classes)}
    if control == "random":
        out = {}
        for c in classes:
            gen = torch.Generator().manual_seed(seed * 7_919 + c)
            noise = [torch.randn(t.shape, generator=gen, dtype=torch.float32) for t in targets[c].tensors]
            norm = torch.sqrt(sum(t.float().pow(2).sum() for t in targets[c].tensors))
            scale = norm / torch.sqrt(sum(n.pow(2).sum() for n in noise))
            tensors = [(n * scale).to(t.dtype).to(t.device) for n, t in zip(noise, targets[c].tensors)]
            out[c] = ClassTarget(tensors, targets[c].count)
        return out
    raise ValueError(f"Unknown target_control {control!r}; choose from {CONTROLS}.")
