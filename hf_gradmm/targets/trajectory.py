"""Class targets along a fine-tuning trajectory (``--target-checkpoints``).

At theta0 a small model barely tells the classes apart, so its class targets differ little;
a little way along a real fine-tuning they differ more (measured in docs/trajectory.md). With
``target_checkpoints`` each class gets a target at every checkpoint k and the x-step matches
all of them, ``f(X) = sum_k w_k f_k(X)`` with ``f_k`` the matching distance under checkpoint k
(matching along the training trajectory, as MTT does for images). Checkpoints:

- ``theta0``: the model as given (the paper);
- ``trajectory:K``: K evenly spaced checkpoints of a short fine-tuning on the real target pool
  with the evaluation harness's recipe, saved in ``output_dir/trajectory`` and reused by a rerun;
- a local folder or Hub id: a PEFT adapter of the model, or a full model with its vocabulary.

LoRA adapters share one copy of the base model (one ``PeftModel``, one named adapter per
checkpoint, switched with ``set_adapter``): K adapters cost one extra model, not K. The model
as given stays untouched: the projection, the LM init and every NLL use it. The weighted
objective over the checkpoints is :class:`hf_gradmm.engine.objective.TrajectoryObjective`.

``args`` below is a :class:`hf_gradmm.GradMatchConfig` (its ``trajectory_*`` fields, ``seed``,
``use_cpu`` and :meth:`~hf_gradmm.GradMatchConfig.checkpoint_specs`).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

from hf_gradmm.distributed import world
from hf_gradmm.engine.objective import Checkpoint
from hf_gradmm.finetune import FinetuneConfig, finetune
from hf_gradmm.tasks import TaskSpec

THETA0 = "theta0"


def _recipe(args, k: int) -> dict:
    return {
        "finetune": args.trajectory_finetune,
        "steps": args.trajectory_steps,
        "lr": args.trajectory_lr,
        "batch_size": args.trajectory_batch_size,
        "checkpoints": k,
        "seed": args.seed,
        "target_examples": args.target_examples,
    }


def train_trajectory(model, tokenizer, task: TaskSpec, pool: dict, args, k: int, out: Path) -> dict:
    """Fine-tune a copy of ``model`` on the real target pool, saving ``checkpoint-<step>`` every
    ``trajectory_steps / k`` steps in ``out``. A finished earlier run with the same recipe is reused.
    Returns ``{"paths": [...], "seconds": s, "reused": bool}``."""
    every = args.trajectory_steps // k
    paths = [out / f"checkpoint-{every * i}" for i in range(1, k + 1)]
    marker = out / "recipe.json"
    recipe = _recipe(args, k)
    if marker.exists() and json.loads(marker.read_text()) == recipe and all(p.exists() for p in paths):
        return {"paths": paths, "seconds": 0.0, "reused": True}
    if world()[1] > 1:
        raise ValueError(
            f"trajectory:{k} fine-tunes the model in one process, and this run has {world()[1]}. Run it once with "
            "one process (its checkpoints are saved in output_dir/trajectory and reused by every later run with the "
            "same recipe), or pass the checkpoint folders to --target-checkpoints."
        )
    if out.exists():  # unfinished or another recipe: start over
        shutil.rmtree(out)
    texts = [t for c in sorted(pool) for t in pool[c]["target"]]
    labels = [c for c in sorted(pool) for _ in pool[c]["target"]]
    config = FinetuneConfig(
        finetune=args.trajectory_finetune,
        max_steps=args.trajectory_steps,
        batch_size=args.trajectory_batch_size,
    )
    if args.trajectory_lr:
        config.learning_rate = config.lora_lr = args.trajectory_lr
    start = time.perf_counter()
    finetune(
        model,
        tokenizer,
        task,
        texts,
        labels,
        None,
        config,
        args.seed,
        checkpoint_dir=str(out),
        save_steps=every,
        use_cpu=args.use_cpu,
    )
    seconds = time.perf_counter() - start
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"The trajectory fine-tuning did not write {missing}; see the Trainer's messages above.")
    marker.write_text(json.dumps(recipe, indent=1))
    return {"paths": paths, "seconds": seconds, "reused": False}


def _is_adapter(source: str) -> bool:
    from peft import PeftConfig  # peft and the auto classes load only when a run has checkpoints

    try:
        PeftConfig.from_pretrained(source)
        return True
    except Exception:  # noqa: BLE001 - not an adapter (or unreachable): try it as a full model next
        return False


def load_checkpoints(
    model, tokenizer, task: TaskSpec, pool: dict, args, trajectory_dir: Path
) -> tuple[list[Checkpoint], dict]:
    """The checkpoints of ``args.target_checkpoints``, loaded; and a report (names, sources, seconds)."""
    specs = args.checkpoint_specs()
    report: dict = {"checkpoints": [], "trajectory_seconds": 0.0}
    sources: dict[str, str] = {}
    trained: dict[int, list[Path]] = {}
    for spec, _ in specs:
        if spec.startswith("trajectory:"):
            k, i = (int(v) for v in spec.split(":", 1)[1].split("/"))
            if k not in trained:
                run = train_trajectory(model, tokenizer, task, pool, args, k, trajectory_dir / f"k{k}")
                trained[k] = run["paths"]
                report["trajectory_seconds"] += run["seconds"]
                report[f"trajectory_k{k}_reused"] = run["reused"]
            sources[spec] = str(trained[k][i - 1])
        elif spec != THETA0:
            sources[spec] = spec
    dtype = next(model.parameters()).dtype
    peft_model = None
    checkpoints = []
    for n, (spec, weight) in enumerate(specs):
        if spec == THETA0:
            checkpoints.append(Checkpoint(THETA0, model, weight))
            report["checkpoints"].append({"name": THETA0, "source": "the model as given", "weight": weight})
            continue
        source = sources[spec]
        if _is_adapter(source):
            from peft import PeftModel

            adapter = f"ckpt{n}"
            if peft_model is None:  # one copy of the base for every adapter
                base = copy.deepcopy(model)
                peft_model = PeftModel.from_pretrained(base, source, adapter_name=adapter)
            else:
                peft_model.load_adapter(source, adapter_name=adapter)
            peft_model.eval().requires_grad_(False)
            checkpoints.append(Checkpoint(spec, peft_model, weight, adapter))
            kind = "lora adapter"
        else:
            from transformers import AutoModelForCausalLM

            try:
                full = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"target checkpoint {spec!r}: {source} is neither a PEFT adapter nor a causal LM folder or Hub id "
                    f"({err}). Give a folder with adapter_config.json or config.json, or 'theta0' / 'trajectory:K'."
                ) from None
            want = model.get_input_embeddings().weight.shape[0]
            if full.get_input_embeddings().weight.shape[0] != want:
                raise ValueError(
                    f"target checkpoint {spec!r} has a vocabulary of {full.get_input_embeddings().weight.shape[0]} "
                    f"tokens, the model {want}: a checkpoint must be a fine-tuning of the same model."
                )
            full.to(model.get_input_embeddings().weight.device).eval().requires_grad_(False)
            checkpoints.append(Checkpoint(spec, full, weight))
            kind = "full model"
        report["checkpoints"].append({"name": spec, "source": source, "kind": kind, "weight": weight})
    return checkpoints, report
