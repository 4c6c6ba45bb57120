"""Differential privacy of the class targets, the one thing GRADMM reads from the real data.

Each real target example's gradient is clipped to norm C (for ``lm_head`` in closed form,
``||a|| ||h||``), a class's clipped gradients are summed and divided by the public count n
(``target_examples``, fixed by the configuration), and Gaussian noise ``N(0, (sigma Delta)^2 I)``
is added once to every class target. The privacy unit is one target example:

- ``add_remove`` (one example added or removed): the concatenated targets move by at most
  ``Delta = C / n`` in L2 norm (the example is in one class only);
- ``replace_one`` (one example replaced, possibly by one of another class): ``Delta = 2 C / n``.

The release is one Gaussian mechanism with L2 sensitivity Delta, so the noise multiplier
``sigma`` is the analytic Gaussian calibration of Balle & Wang (2018) for (epsilon, delta), as
computed by Google's ``dp-accounting`` library (``get_sigma_gaussian``); nothing here derives
it by hand. Everything downstream (ADMM, projection, refinement, the builder's scores) reads
the real data only through these noisy targets, which is what makes the texts
(epsilon, delta)-DP by post-processing. The other paths by which real data could reach the
output are refused in DP mode: every such rule is here, for the synthesis
(:func:`leaking_options`) and for the dataset builder (:func:`build_leaking_options`).
"""

from __future__ import annotations

import math
import secrets
from importlib.metadata import version

import torch

from hf_gradmm.engine.gradients import ClassTarget

NEIGHBOURING = ("add_remove", "replace_one")
DP_LOCAL_NOTE = (
    "Statistics of the clean (private) targets: the clipped mean's norm, the examples clipped, the noise drawn "
    "and their ratio. They are not covered by the DP guarantee; keep them local (the builder never publishes them)."
)


def noise_multiplier(epsilon: float, delta: float) -> float:
    """Noise std per unit of L2 sensitivity for (epsilon, delta), from the accountant library."""
    import dp_accounting

    return float(dp_accounting.get_sigma_gaussian(epsilon, delta))


def sensitivity(clip_norm: float, count: int, neighbouring: str) -> float:
    """L2 sensitivity of the concatenated class targets (see the module docstring)."""
    if neighbouring not in NEIGHBOURING:
        raise ValueError(f"dp_neighbouring={neighbouring!r} is not one of {NEIGHBOURING}.")
    return (1.0 if neighbouring == "add_remove" else 2.0) * clip_norm / count


def accountant_name() -> str:
    return f"dp-accounting {version('dp-accounting')}: get_sigma_gaussian (analytic Gaussian mechanism)"


def leaking_options(args) -> list[str]:
    """Each option that would let real data reach the output outside the noisy targets, and its fix."""
    leaks = []
    if args.seq_len == 0:
        leaks.append("seq_len=0 sets the text length from the real examples' mean length: give --seq-len N")
    if args.second_seq_len == 0 and args.to_task().is_pair:
        leaks.append(
            "second_seq_len=0 sets a pair's second segment length from the real examples' mean: give --second-seq-len N"
        )
    if args.init == "real":
        leaks.append("init='real' starts from real examples: use --init lm or --init random")
    if args.coverage_weight > 0:
        leaks.append(
            "coverage_weight > 0 groups the real examples by their own gradients, outside the DP noise: set "
            "--coverage-weight 0"
        )
    if args.select_scorer:
        leaks.append(
            "select_scorer reads the real examples a second time, through another model's targets, and this "
            "run's noise covers one set of targets: leave --select-scorer empty"
        )
    if args.calibrate and args.heldout_examples > 0:
        leaks.append(
            "heldout_examples > 0 puts distances of real held-out texts in metrics.json and the dataset card: "
            "set --heldout-examples 0 (calibration then reports the model's samples and the GRADMM texts only)"
        )
    entries = [e.strip() for e in args.target_checkpoints.split(",") if e.strip()]
    if any(e.startswith("trajectory:") for e in entries):
        leaks.append(
            "target_checkpoints trajectory:K fine-tunes on the private examples without differential privacy: "
            "use theta0, or checkpoints whose own training was DP (with --dp-public-checkpoints)"
        )
    others = [e for e in entries if e != "theta0" and not e.startswith("trajectory:")]
    if others and not args.dp_public_checkpoints:
        leaks.append(
            f"target_checkpoints {others} may have been trained on the private data, which leaks it unless that "
            "training was itself DP: pass --dp-public-checkpoints true only if they never saw the private data or "
            "were trained with DP (whose budget adds to this run's epsilon), else use theta0"
        )
    return leaks


def build_leaking_options(builder_args) -> list[str]:
    """Each builder option that would publish real data beside a DP synthesis, and its fix."""
    leaks = []
    if builder_args.fewshot == "real":
        leaks.append("fewshot='real' shows real examples to the label filter: use task or none")
    if builder_args.include_real_splits:
        leaks.append("include_real_splits publishes real examples: leave it off")
    return leaks


def check_config(args) -> None:
    """Refuse a DP run that would leak, naming every leaking option."""
    if args.dp_epsilon <= 0:
        return
    leaks = leaking_options(args)
    if leaks:
        raise ValueError("Differential privacy (dp_epsilon > 0) is refused: " + "; ".join(leaks) + ".")


def privatise(
    targets: dict[int, ClassTarget],
    args,
    generator: torch.Generator | None = None,
    releases: int = 1,
    row_dim: int | None = None,
) -> tuple[dict, dict, dict]:
    """Add the calibrated Gaussian noise to every class target (clipped already).

    Returns the noisy targets, the public report (the dataset card shows it: only the
    configuration, the calibration and figures derived from them) and the local statistics
    (per class: the clean target's norm, the examples clipped, the noise drawn; statistics of
    the private data, outside the guarantee, so never published). ``generator`` defaults to one
    seeded from the OS's secure randomness (the noise must not be reproducible from the config's
    seed). ``releases``: how many times the same examples' targets are released (one per target
    checkpoint); K Gaussian releases of sensitivity Delta are one of sensitivity Delta sqrt(K).
    ``row_dim``: for ``lm_head`` targets, the hidden size d, to report the signal-to-noise bound
    of one output row (where the label word's gradient sits)."""
    counts = {t.count for t in targets.values()}
    if len(counts) != 1:
        raise ValueError(f"DP needs the same public count of target examples per class (got {sorted(counts)}).")
    count = counts.pop()
    sigma = noise_multiplier(args.dp_epsilon, args.dp_delta)
    delta_l2 = sensitivity(args.dp_clip_norm, count, args.dp_neighbouring) * math.sqrt(releases)
    std = sigma * delta_l2
    if generator is None:
        generator = torch.Generator().manual_seed(secrets.randbits(63))
    noisy, local = {}, {}
    for c, target in targets.items():
        noise = [torch.randn(t.shape, generator=generator, dtype=torch.float32) * std for t in target.tensors]
        clean_norm = math.sqrt(sum(float(t.float().pow(2).sum()) for t in target.tensors))
        noise_norm = math.sqrt(sum(float(z.pow(2).sum()) for z in noise))
        noisy[c] = ClassTarget(  # drawn on the CPU: the same noise whatever device the target is on
            [t + z.to(t.device, t.dtype) for t, z in zip(target.tensors, noise)], target.count, target.clipped
        )
        local[c] = {
            "clipped_examples": target.clipped,
            "clipped_mean_norm": clean_norm,
            "noise_norm": noise_norm,
            "signal_to_noise": clean_norm / noise_norm if noise_norm else math.inf,
        }
    coordinates = sum(t.numel() for t in next(iter(targets.values())).tensors)
    expected_noise = std * math.sqrt(coordinates)
    report = {
        "epsilon": args.dp_epsilon,
        "delta": args.dp_delta,
        "neighbouring": args.dp_neighbouring,
        "privacy_unit": "one target example (target_examples per class, a public count)",
        "clip_norm": args.dp_clip_norm,
        "target_examples_per_class": count,
        "releases": releases,
        "sensitivity_l2": delta_l2,
        "noise_multiplier": sigma,
        "noise_std": std,
        "accountant": accountant_name(),
        # Public bounds: the clipped mean has norm <= C whatever the data; its actual norm is private.
        "coordinates": coordinates,
        "noise_norm_expected": expected_noise,
        "signal_to_noise_at_most": args.dp_clip_norm / expected_noise if expected_noise else math.inf,
    }
    if row_dim:
        report["row_noise_norm_expected"] = std * math.sqrt(row_dim)
        report["row_signal_to_noise_at_most"] = args.dp_clip_norm / report["row_noise_norm_expected"]
    return noisy, report, local
