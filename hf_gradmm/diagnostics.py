"""What a finished run reports about itself: per-class figures and the calibration table.

The calibration table puts the GRADMM texts' matching distances beside reference points measured
against the same class target: held-out real texts of the class, other classes' real texts given
this class's label word, and texts the model samples from the same class-naming prefix. It is
how a user (and the dataset card) can tell whether the matching did better than the model alone.
(Not to be confused with the label filter's *contextual* calibration, in hf_gradmm.lm.)
"""

from __future__ import annotations

import random

import torch

from hf_gradmm.engine.objective import MatchingObjective
from hf_gradmm.engine.projection import allowed_vocabulary
from hf_gradmm.engine.round import RoundRecord
from hf_gradmm.lm import decode_texts, encode_texts, mean_text_nll, sample_texts, token_logprobs
from hf_gradmm.targets.setup import Prepared


def run_metrics(prepared: Prepared, rounds: list[RoundRecord], args, processes: int, calibrate: bool) -> dict:
    """metrics.json: the generator, task, device, targets, DP report, text lengths, per-class
    figures and (``calibrate``) the calibration table."""
    task, model = prepared.task, prepared.model
    config = getattr(model, "config", None)
    metrics = {
        "generator": getattr(model, "hf_gradmm_name", getattr(config, "_name_or_path", "")),
        "task": {
            "name": task.name,
            "source": task.default_source,
            "hub_id": task.hub_id,
            "label_names": list(task.label_names),
            "label_words": list(task.label_words),
            "template": task.template,
        },
        "device": str(model.get_input_embeddings().weight.device),  # of the main process
        "processes": processes,
        "target_seconds": prepared.target_seconds,
        "target_checkpoints": prepared.checkpoint_report,
        "dp": prepared.dp_report,
        "dp_local": prepared.dp_local,  # statistics of the private data: the builder never publishes them
        "seq_len": {task.label_names[c]: n for c, n in prepared.seq_lens.items()},
        "per_class": {},
    }
    for c, name in enumerate(task.label_names):
        mine = [r for r in rounds if r.label == c]
        if mine:  # none: a run stopped by a callback before this class's first round
            metrics["per_class"][name] = class_figures(prepared, mine, args.seed)
    if calibrate:
        metrics["calibration"] = calibration(prepared, rounds, args)
    return metrics


def class_figures(prepared: Prepared, mine: list[RoundRecord], seed: int) -> dict:
    """Means over one class's rounds and texts."""
    count = sum(len(r.texts) for r in mine)
    scored = [r.scorer_distance for r in mine if r.scorer_distance is not None]
    return {
        "texts": count,
        "initial_distance": sum(r.initial_distance for r in mine) / len(mine),
        "admm_distance": sum(r.admm_distance for r in mine) / len(mine),
        "final_distance": sum(r.final_distance for r in mine) / len(mine),
        "scorer_distance": sum(scored) / len(scored) if scored else None,  # select_scorer only
        "mean_text_distance": sum(d for r in mine for d in r.per_text_distance) / count,
        "mean_nll": sum(n for r in mine for n in r.nll) / count,
        "mean_nll_words_shuffled": shuffled_nll(prepared, [t for r in mine for t in r.texts], seed),
        "round_seconds": sum(r.seconds for r in mine) / len(mine),
        "x_step_seconds": sum(r.x_step_seconds for r in mine) / len(mine),
    }


def shuffled_nll(prepared: Prepared, texts: list[str], seed: int) -> float:
    """Mean NLL of the texts with their words shuffled: how much of their NLL is word order."""
    rng = random.Random(seed)
    shuffled = []
    for t in texts:
        words = t.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    return mean_text_nll(prepared.model, prepared.tokenizer, shuffled)


def texts_distance(prepared: Prepared, objective: MatchingObjective, texts: list[str]) -> float:
    """Batch distance of real texts (each with ``objective``'s label word) to ``objective``'s target,
    under ``objective``'s model (its checkpoint must be active)."""
    batch = encode_texts(prepared.tokenizer, prepared.task, texts)
    return objective.prompts_value(batch)


def _at_checkpoint(prepared: Prepared, c: int, k: int, heldout, others, sampled, mine) -> dict:
    """Calibration figures of class ``c`` at its ``k``-th checkpoint."""
    checkpoint, objective = prepared.parts[c][k]
    names = prepared.task.label_names
    with checkpoint.active():
        return {
            "heldout_same_class": texts_distance(prepared, objective, heldout) if heldout else None,
            "other_classes": texts_distance(prepared, objective, others) if others else None,
            "model_sampled": objective.value(sampled),
            "gradmm_final": sum(objective.value(torch.tensor(r.token_ids)) for r in mine) / len(mine),
            "gradmm_final_to_other_targets": {
                names[o]: sum(prepared.parts[o][k][1].value(torch.tensor(r.token_ids)) for r in mine) / len(mine)
                for o in prepared.parts
                if o != c
            },
        }


def _weighted(weights: dict[str, float], per_checkpoint: dict, *keys: str) -> float | None:
    """The checkpoint-weighted mean of one figure (None when any checkpoint lacks it)."""
    values = []
    for name, w in weights.items():
        value = per_checkpoint[name]
        for key in keys:
            value = value[key]
        values.append((w, value))
    return None if any(v is None for _, v in values) else sum(w * v for w, v in values)


def calibration(prepared: Prepared, rounds: list[RoundRecord], args) -> dict:
    """Per class, distances to the class target of (a) held-out same-class real texts, (b) other
    classes' real texts given this class's label word, (c) texts the model samples from the same
    prefix, (d) the GRADMM batches, initial and final; plus (d) against the other targets. With
    several target checkpoints, (a)-(d) at each checkpoint too (``per_checkpoint``); the top-level
    figures are then their weighted means, the objective the run minimised."""
    out, batch, pool, names = {}, args.texts_per_round, prepared.pool, prepared.task.label_names
    all_tokens = allowed_vocabulary(prepared.tokenizer, prepared.allowed.shape[0], "all")
    for c, name in enumerate(names):
        heldout = pool[c]["heldout"][:batch]
        others = [t for o in pool if o != c for t in pool[o]["heldout"]][:batch]
        gen = torch.Generator().manual_seed(args.seed + 7919 * (c + 1))
        sampled = sample_texts(
            prepared.model,
            prepared.prefix_ids[c],
            all_tokens,
            batch,
            prepared.seq_lens[c],
            gen,
            1.0,
            prepared.pinned.get(c),
        )
        mine = [r for r in rounds if r.label == c]
        if not mine:
            continue
        per_checkpoint = {
            ckpt.name: _at_checkpoint(prepared, c, k, heldout, others, sampled, mine)
            for k, (ckpt, _) in enumerate(prepared.parts[c])
        }
        weights = {ckpt.name: ckpt.weight for ckpt, _ in prepared.parts[c]}
        entry = {
            "heldout_same_class": _weighted(weights, per_checkpoint, "heldout_same_class"),
            "other_classes": _weighted(weights, per_checkpoint, "other_classes"),
            "model_sampled": _weighted(weights, per_checkpoint, "model_sampled"),
            "model_sampled_nll": float(-token_logprobs(prepared.model, prepared.start_ids, sampled).mean()),
            "gradmm_initial": sum(r.initial_distance for r in mine) / len(mine),
            "gradmm_admm": sum(r.admm_distance for r in mine) / len(mine),
            "gradmm_final": sum(r.final_distance for r in mine) / len(mine),
            "gradmm_final_to_other_targets": {
                names[o]: _weighted(weights, per_checkpoint, "gradmm_final_to_other_targets", names[o])
                for o in prepared.parts
                if o != c
            },
            "sampled_examples": decode_texts(prepared.tokenizer, sampled[:3], prepared.pinned.get(c)),
        }
        if len(prepared.parts[c]) > 1:
            entry["per_checkpoint"] = per_checkpoint
        out[name] = entry
    return out
