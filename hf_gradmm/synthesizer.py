"""``GradMatchSynthesizer``: the GRADMM engine, in the ``transformers.Trainer`` style.

For each class c, the target G_c is the mean gradient of the loss on real examples. Each
round optimises B synthetic sequences jointly by ADMM over their input embeddings X:

    minimise  f(X) = distance(grad of the B texts, G_c)   subject to  X = E[Z], Z real tokens

    1. z-step  Z = Proj(X + L/rho)                    (projection.py: top-k, LM-reranked)
    2. x-step  inner Adam steps on f(X) + rho/2 ||X - E[Z] + L/rho||^2 (+ lm_coeff * NLL(Z | X))
    3. dual    L = L + rho (X - E[Z])

and keeps the projected batch with the lowest matching distance. Every finished round is
written to ``output_dir/rounds`` at once; ``resume=True`` continues after the last one.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from datasets import ClassLabel, Dataset, Features, Value
from transformers import TrainerControl, TrainerState

from hf_gradmm.callbacks import JsonlLoggerCallback, SynthesisProgressCallback
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.distributed import barrier, device, gather, world
from hf_gradmm.gradients import ClassTarget, class_target, encode_prompts, lm_head_example_factors, select_matched
from hf_gradmm.objective import MatchingObjective, template_parts
from hf_gradmm.privacy import privatise
from hf_gradmm.projection import (
    allowed_vocabulary,
    mean_text_nll,
    project,
    sample_texts,
    start_ids,
    swap_refine,
    token_logprobs,
)
from hf_gradmm.tasks import TaskSpec, label_token_ids, load_task
from hf_gradmm.trajectory import THETA0, Checkpoint, TrajectoryObjective, load_checkpoints

DEFAULT_PREFIX = "Here is a {description} {domain}:"
DP_LOCAL_NOTE = (
    "Statistics of the clean (private) targets: the clipped mean's norm, the examples clipped, the noise drawn "
    "and their ratio. They are not covered by the DP guarantee; keep them local (the builder never publishes them)."
)


@dataclass
class SyntheticText:
    """One synthetic example and how it was made."""

    text: str
    label: int
    round: int
    match_distance: float  # this text's own gradient vs its class target
    nll: float  # mean token NLL under the model (from the start token, no prefix)


@dataclass
class RoundRecord:
    """What a finished round wrote to disk."""

    round: int
    label: int
    token_ids: list[list[int]]
    texts: list[str]
    initial_distance: float  # batch distance of the projected init
    admm_distance: float  # batch distance of the best projected ADMM iterate (before any refinement)
    final_distance: float  # batch distance of the kept batch (after refine_steps token swaps, if any)
    per_text_distance: list[float]
    nll: list[float]
    best_iteration: int
    seconds: float
    stopped_early: str | None = None
    x_step_seconds: float = 0.0  # mean wall time of one inner x-step


@dataclass
class SynthesisResult:
    """Output of :meth:`GradMatchSynthesizer.train`."""

    texts: list[SyntheticText]
    rounds: list[RoundRecord]
    label_names: list[str]
    metrics: dict = field(default_factory=dict)
    output_dir: str | None = None

    def to_dataset(self) -> Dataset:
        features = Features(
            {
                "text": Value("string"),
                "label": ClassLabel(names=self.label_names),
                "round": Value("int32"),
                "match_distance": Value("float32"),
                "nll": Value("float32"),
            }
        )
        rows = {k: [getattr(t, k) for t in self.texts] for k in features}
        return Dataset.from_dict(rows, features=features)


def _mean_pairwise_cosine(targets: list[list[torch.Tensor]]) -> float | None:
    """Mean cosine over pairs of class targets (each a list of tensors, flattened together)."""
    flat = [torch.cat([t.float().reshape(-1) for t in tensors]) for tensors in targets]
    pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))]
    if not pairs:
        return None
    return sum(float(torch.nn.functional.cosine_similarity(flat[i], flat[j], dim=0)) for i, j in pairs) / len(pairs)


class SynthesisError(RuntimeError):
    """A synthesis that cannot go on; finished rounds stay on disk."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def real_pool(
    source: Dataset | None, task: TaskSpec, target_examples: int, heldout_examples: int, seed: int, split: str = "train"
) -> dict[int, dict[str, list[str]]]:
    """Per class: the ``target`` texts (their mean gradient is the class target) and ``heldout``
    texts (calibration), a seeded draw from ``source``; the evaluation harness reuses it."""
    if source is None or len(source) == 0:
        raise ValueError(f"The real {split} split is empty; give a dataset with examples.")
    need = target_examples + heldout_examples
    rng = random.Random(seed)
    pool = {}
    labels = source["label"]
    texts = source["text"]
    for c, name in enumerate(task.label_names):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        if not idx:
            raise ValueError(f"Class {name!r} has no example in the real {split} split.")
        if len(idx) < need:
            raise ValueError(
                f"Class {name!r} has {len(idx)} examples in the real {split} split, fewer than "
                f"target_examples + heldout_examples = {target_examples} + {heldout_examples}. "
                "Lower --target-examples / --heldout-examples or use a larger split."
            )
        rng.shuffle(idx)
        pool[c] = {
            "target": [texts[i] for i in idx[:target_examples]],
            "heldout": [texts[i] for i in idx[target_examples:need]],
        }
    return pool


class GradMatchSynthesizer:
    """Makes readable synthetic texts whose fine-tuning gradient matches real data's (GRADMM).

    Args:
        model: A causal LM (``AutoModelForCausalLM``), or a PEFT model when
            ``args.matched_params == 'peft'``.
        args: The :class:`GradMatchConfig`.
        train_dataset: Real labelled data (``text``, ``label``) the targets come from; default:
            the task's own ``train`` split.
        eval_dataset: Real data for ``real_split='validation'``; default the task's validation split.
        processing_class: The model's tokenizer.
        callbacks: ``transformers.TrainerCallback`` instances (or classes).
        task: A :class:`TaskSpec`; default ``args.to_task()``.
    """

    def __init__(
        self,
        model,
        args: GradMatchConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        callbacks=None,
        task: TaskSpec | None = None,
    ):
        if processing_class is None:
            raise ValueError("GradMatchSynthesizer needs processing_class=<the model's tokenizer>.")
        self.args = args or GradMatchConfig()
        self.model = model
        self.tokenizer = processing_class
        self.task = task or self.args.to_task()
        if train_dataset is None or (eval_dataset is None and self.args.real_split == "validation"):
            data, self.task = load_task(self.task)
            train_dataset = train_dataset if train_dataset is not None else data["train"]
            eval_dataset = eval_dataset if eval_dataset is not None else data["validation"]
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.output_dir = Path(self.args.output_dir)
        self.rank, self.world = world()  # several processes: each makes every world-th round
        main = self.rank == 0
        self.callbacks = [] if self.args.disable_tqdm or not main else [SynthesisProgressCallback()]
        if self.args.report_to == "jsonl" and main:
            self.callbacks.append(JsonlLoggerCallback(self.output_dir))
        for callback in callbacks or []:
            self.add_callback(callback)
        self.state = TrainerState()
        self.control = TrainerControl()

    # ------------------------------------------------------------------ callbacks (Trainer API)
    def add_callback(self, callback) -> None:
        """Add a ``TrainerCallback`` instance or class."""
        self.callbacks.append(callback() if isinstance(callback, type) else callback)

    def pop_callback(self, callback):
        """Remove and return a callback, given as an instance or a class."""
        for cb in self.callbacks:
            if cb is callback or (isinstance(callback, type) and isinstance(cb, callback)):
                self.callbacks.remove(cb)
                return cb
        return None

    def remove_callback(self, callback) -> None:
        self.pop_callback(callback)

    def _event(self, name: str, **kwargs) -> None:
        """Call ``name`` on every callback, as ``transformers.Trainer`` does."""
        for callback in self.callbacks:
            result = getattr(callback, name)(
                self.args, self.state, self.control, model=self.model, processing_class=self.tokenizer, **kwargs
            )
            if result is not None:
                self.control = result

    def log(self, logs: dict) -> None:
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self._event("on_log", logs=logs)

    # ------------------------------------------------------------------ set-up
    def _real_pool(self) -> dict[int, dict[str, list[str]]]:
        args = self.args
        source = self.train_dataset if args.real_split == "train" else self.eval_dataset
        return real_pool(source, self.task, args.target_examples, args.heldout_examples, args.seed, args.real_split)

    def _prefix_text(self, label: int) -> str:
        template = self.args.projection_prefix if self.args.projection_prefix is not None else DEFAULT_PREFIX
        return template.format(
            description=self.task.class_descriptions[label] if self.task.class_descriptions else "",
            domain=self.task.domain,
            label_word=self.task.label_words[label],
        )

    def _place_model(self) -> None:
        """Put the model on this process's device (as ``Trainer`` does), unless it was loaded with a
        ``device_map`` (placed by the user or dispatched over devices): then it stays, and its
        inputs go where its embeddings are."""
        if getattr(self.model, "hf_device_map", None) is None:
            self.model.to(device(self.args.use_cpu))
        self.device = self.model.get_input_embeddings().weight.device

    def _prepare(self) -> None:
        args = self.args
        torch.manual_seed(args.seed)
        if args.dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        self._place_model()
        self.model.eval()
        self._grad_flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.requires_grad_(False)
        self.label_tokens = label_token_ids(self.task, self.tokenizer)
        self.matched = select_matched(self.model, args.matched_params)
        for p in self.matched.parameters():  # the general path differentiates w.r.t. these
            p.requires_grad_(not self.matched.is_lm_head)
        self._attn_to_restore = None
        attn = getattr(self.model.config, "_attn_implementation", None)
        if not self.matched.is_lm_head and attn not in (None, "eager"):
            # Double backward through SDPA is not implemented on CPU; the lm_head closed form needs none.
            self._attn_to_restore = attn
            self.model.set_attn_implementation("eager")
        self.pool = self._real_pool()
        self.lead_ids, self.tail_ids = template_parts(self.task.template, self.tokenizer)
        self.start_ids = start_ids(self.tokenizer)  # context of a text's NLL
        self.prefix_ids = {c: start_ids(self.tokenizer, self._prefix_text(c)) for c in range(self.task.num_labels)}
        self.allowed = allowed_vocabulary(
            self.tokenizer, self.model.get_input_embeddings().weight.shape[0], args.vocab_filter
        ).to(self.device)
        emb = self.model.get_input_embeddings().weight.detach()
        self.embed_norm = float(emb[self.allowed].float().norm(dim=-1).mean())
        t0 = time.perf_counter()
        self.checkpoints, self.checkpoint_report = self._checkpoints()
        self.target_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        dp = args.dp_epsilon > 0
        noise = self._dp_generator() if dp else None
        self.dp_report: dict | None = None  # public: the card shows it
        self.dp_local = {"note": DP_LOCAL_NOTE, "per_checkpoint": {}} if dp else None
        # parts[c]: (checkpoint, that checkpoint's objective for class c), one per checkpoint
        self.parts: dict[int, list[tuple[Checkpoint, MatchingObjective]]] = {c: [] for c in range(self.task.num_labels)}
        for checkpoint in self.checkpoints:
            with checkpoint.active() as model:
                matched = self.matched if model is self.model else self._matched_at(model)
                targets = {}
                for c in range(self.task.num_labels):
                    prompts = [self.task.format_prompt(t) for t in self.pool[c]["target"]]
                    targets[c] = class_target(
                        model,
                        self.tokenizer,
                        matched,
                        prompts,
                        self.label_tokens[c],
                        args.target_batch_size,
                        shard=(self.rank, self.world),
                        clip_norm=args.dp_clip_norm if dp else 0.0,
                    )
                if dp:  # the noisy targets are all that the rest of the run reads from the real data
                    row_dim = matched.parameters()[0].shape[1] if matched.is_lm_head else None
                    targets, report, local = privatise(targets, args, noise, len(self.checkpoints), row_dim)
                    self.dp_report = self.dp_report or report
                    self.dp_local["per_checkpoint"][checkpoint.name] = {
                        self.task.label_names[c]: v for c, v in local.items()
                    }
                common = None
                if args.target_centering == "common":
                    n = len(targets)
                    common = ClassTarget(
                        [sum(t.tensors[i] for t in targets.values()) / n for i in range(len(matched.parameters()))], 0
                    )
                for c in targets:
                    objective = MatchingObjective(
                        model,
                        matched,
                        targets[c],
                        self.label_tokens[c],
                        self.lead_ids,
                        self.tail_ids,
                        args.distance,
                        common,
                    )
                    self.parts[c].append((checkpoint, objective))
        self.target_seconds += time.perf_counter() - t0  # fine-tuning (if any) + targets at every checkpoint
        # How far apart the class targets are at each checkpoint (1 = the same direction): the class signal.
        self.checkpoint_report["class_target_cosine"] = {
            checkpoint.name: _mean_pairwise_cosine([self.parts[c][k][1].targets for c in self.parts])
            for k, checkpoint in enumerate(self.checkpoints)
        }
        if len(self.checkpoints) == 1 and self.checkpoints[0].model is self.model:
            self.objectives = {c: parts[0][1] for c, parts in self.parts.items()}
        else:
            embedding = self.model.get_input_embeddings()
            self.objectives = {c: TrajectoryObjective(parts, embedding) for c, parts in self.parts.items()}
        self.seq_lens = {}
        for c in self.parts:
            if args.seq_len:
                self.seq_lens[c] = args.seq_len
            else:
                lengths = [
                    len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in self.pool[c]["target"]
                ]
                self.seq_lens[c] = max(2, round(sum(lengths) / len(lengths)))

    def _dp_generator(self) -> torch.Generator:
        """The noise generator: seeded from the OS's secure randomness on the main process, shared with
        the others, and kept in output_dir/dp_state.json (local, never published) so that a resumed run
        adds the same noise instead of releasing the targets a second time."""
        self._load_finished_rounds(check_only=True)  # refuse before touching the output dir
        path = self.output_dir / "dp_state.json"
        seed = None
        if self.args.resume and path.exists():
            seed = json.loads(path.read_text())["noise_seed"]
        elif self.rank == 0:
            seed = secrets.randbits(63)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, json.dumps({"noise_seed": seed, "note": "secret: do not publish"}))
        seed = gather(seed)[0] if self.world > 1 else seed
        return torch.Generator().manual_seed(seed)

    def _checkpoints(self) -> tuple[list[Checkpoint], dict]:
        if self.args.target_checkpoints.strip() != THETA0:
            if self.args.matched_params == "peft":
                raise ValueError(
                    "matched_params='peft' matches the given model's own adapters, which other checkpoints do not "
                    "share; with target_checkpoints other than theta0 use 'lm_head' or a module regular expression."
                )
            self._load_finished_rounds(check_only=True)  # refuse before a fine-tuning touches output_dir/trajectory
        return load_checkpoints(self.model, self.tokenizer, self.task, self.pool, self.args, self.output_dir)

    def _matched_at(self, model):
        """The matched parameters of another checkpoint's model, set up as for the model as given."""
        matched = select_matched(model, self.args.matched_params)
        for p in matched.parameters():
            p.requires_grad_(not matched.is_lm_head)
        if not matched.is_lm_head and getattr(model.config, "_attn_implementation", None) not in (None, "eager"):
            model.set_attn_implementation("eager")  # our own copy: not restored
        return matched

    def _fingerprint(self) -> dict:
        model_config = getattr(self.model, "config", None)
        return {
            "config": self.args.fingerprint(),
            "task": {k: v for k, v in asdict(self.task).items() if k != "data_files"},
            "model": {
                "name_or_path": getattr(model_config, "_name_or_path", ""),
                "model_type": getattr(model_config, "model_type", ""),
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
            "data": {"real_rows": len(self.train_dataset if self.args.real_split == "train" else self.eval_dataset)},
        }

    # ------------------------------------------------------------------ output dir and resume
    def _load_finished_rounds(self, check_only: bool = False) -> list[RoundRecord]:
        """Finished rounds of a resumed run (refusing a changed config or a non-resumed full dir);
        ``check_only``: refuse the same way but write nothing (before costly set-up work)."""
        rounds_dir = self.output_dir / "rounds"
        state_path = self.output_dir / "run_state.json"
        finished = sorted(rounds_dir.glob("round_*.json")) if rounds_dir.exists() else []
        fingerprint = json.loads(json.dumps(self._fingerprint()))
        if not self.args.resume:
            if finished:
                raise SynthesisError(
                    f"{self.output_dir} already holds {len(finished)} finished round(s). Pass --resume to continue "
                    "that run, or choose another --output-dir; nothing was overwritten."
                )
            if not check_only:
                rounds_dir.mkdir(parents=True, exist_ok=True)
                _atomic_write(state_path, json.dumps(fingerprint, indent=2))
            return []
        if not state_path.exists():
            if not check_only:
                rounds_dir.mkdir(parents=True, exist_ok=True)
                _atomic_write(state_path, json.dumps(fingerprint, indent=2))
            return []
        saved = json.loads(state_path.read_text())
        if saved != fingerprint:
            changed = [
                f"{section}.{key}"
                for section, values in fingerprint.items()
                for key in sorted(set(values) | set(saved.get(section, {})))
                if saved.get(section, {}).get(key) != values.get(key)
            ]
            raise SynthesisError(
                f"Cannot resume {self.output_dir}: the configuration changed ({', '.join(changed)}). Resume with the "
                "same settings, or start a new run in another --output-dir."
            )
        return [RoundRecord(**json.loads(p.read_text())) for p in finished]

    def _save_round(self, record: RoundRecord) -> None:
        path = self.output_dir / "rounds" / f"round_{record.round:04d}.json"
        _atomic_write(path, json.dumps(asdict(record), indent=1))

    # ------------------------------------------------------------------ one round of ADMM
    def _generator(self, round_idx: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.args.seed * 100_003 + round_idx)

    def _init(
        self, label: int, batch: int, length: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Initial X and, for the 'lm' and 'real' inits that start from tokens, those tokens (the first Z)."""
        args, objective = self.args, self.objectives[label]
        emb = self.model.get_input_embeddings().weight.detach()
        dtype = emb.dtype
        if args.init == "lm":
            ids = sample_texts(
                self.model, self.prefix_ids[label], self.allowed, batch, length, gen, args.init_temperature
            )
            return objective.embed(ids).clone(), ids
        if args.init == "real":
            prompts = self.pool[label]["target"]
            ids_list = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompts]
            ids_list = [(ids * math.ceil(length / max(len(ids), 1)))[:length] for ids in ids_list]
            ids = torch.tensor(ids_list, dtype=torch.long, device=self.device)
            per_text = objective.per_text(ids)
            order = sorted(range(len(per_text)), key=per_text.__getitem__)[:batch]
            chosen = ids[order]
            if len(order) < batch:  # fewer real targets than B: repeat the closest ones
                chosen = chosen.repeat(math.ceil(batch / len(order)), 1)[:batch]
            return objective.embed(chosen).clone(), None  # projected, so real texts are not copied verbatim
        best, best_x = float("inf"), None
        for _ in range(args.init_candidates):
            x = torch.randn(batch, length, emb.shape[1], generator=gen).to(self.device)  # same draw on any device
            x = (x / x.norm(dim=-1, keepdim=True) * self.embed_norm).to(dtype)
            value = objective.value_embeds(x)
            if value < best:
                best, best_x = value, x
        return best_x, None

    def _project(self, label: int, point: torch.Tensor) -> torch.Tensor:
        """z-step: project ``point`` onto token ids; with beams, choose each row's beam by the distance."""
        args, objective = self.args, self.objectives[label]
        grad = None
        if args.projection == "guided":
            _, grad = objective.value_and_grad_embeds(point)
        beams, _ = project(
            self.model,
            point.detach(),
            self.allowed,
            self.prefix_ids[label],
            args.topk,
            guidance=args.projection_guidance if args.projection == "guided" else 0.0,
            point_grad=grad,
            beams=args.projection_beams,
        )
        ids = beams[:, 0].clone()
        # One pass of coordinate descent over the rows: each row keeps the beam that gives the
        # batch the lowest exact matching distance (all beams are likely texts under the LM).
        for row in range(len(ids)) if args.projection_beams > 1 else ():
            values = objective.swap_values(ids, torch.full((beams.shape[1],), row), beams[row])
            ids[row] = beams[row, int(values.argmin())]
        return ids

    def _run_round(self, round_idx: int, label: int, batch: int, rounds_total: int) -> RoundRecord:
        args, objective = self.args, self.objectives[label]
        start = time.perf_counter()
        gen = self._generator(round_idx)
        length = self.seq_lens[label]
        x, z_ids = self._init(label, batch, length, gen)
        x = x.detach().requires_grad_(True)
        dual = torch.zeros_like(x)
        optimizer = torch.optim.Adam([x], lr=args.lr)
        if z_ids is None:  # a continuous init is projected; token inits are their own first Z
            z_ids = self._project(label, x)
        best_ids, best_value, best_it = z_ids, objective.value(z_ids), 0
        initial = value = best_value
        stopped = None
        name = self.task.label_names[label]
        x_seconds, x_steps = 0.0, 0
        for it in range(args.outer_steps):
            if it > 0:  # z-step (iteration 0 uses the projected init)
                z_ids = self._project(label, x.detach() + dual / args.rho)
                value = objective.value(z_ids)
                if value < best_value:
                    best_ids, best_value, best_it = z_ids, value, it
            z_emb = objective.embed(z_ids)
            x_start = time.perf_counter()
            for _ in range(args.inner_steps):  # x-step
                x_steps += 1
                optimizer.zero_grad(set_to_none=True)
                f, nll = objective.distance(x, need_grad=True, z_ids=z_ids if args.lm_coeff else None)
                penalty = (x - z_emb + dual / args.rho).float().pow(2).sum()
                loss = f + args.rho / 2 * penalty + args.lm_coeff * nll
                if not torch.isfinite(loss):
                    stopped = (
                        f"round {round_idx} ({name}) stopped at outer iteration {it}: the matching distance became "
                        f"non-finite ({float(f.detach())}); lower --lr or --rho. The round keeps its best projected "
                        f"batch (iteration {best_it}, distance {best_value:.4f})."
                    )
                    break
                loss.backward()
                if args.grad_clip:
                    torch.nn.utils.clip_grad_norm_([x], args.grad_clip)
                optimizer.step()
            if x.is_cuda:  # GPU work is asynchronous: time the x-steps to their end
                torch.cuda.synchronize(x.device)
            x_seconds += time.perf_counter() - x_start
            if stopped:
                break
            with torch.no_grad():  # dual step
                dual += args.rho * (x.detach() - z_emb)
            self.state.global_step += 1
            self._event("on_step_end")
            if (it + 1) % args.logging_steps == 0 or it == args.outer_steps - 1:
                self.log(
                    {
                        "round": round_idx,
                        "rounds": rounds_total,
                        "class": name,
                        "outer_iteration": it,
                        "match_distance": value,
                        "best_distance": best_value,
                        "x_distance": float(f.detach()),
                        "primal_residual": float((x.detach() - z_emb).float().norm()),
                    }
                )
        if stopped:
            self.log({"round": round_idx, "rounds": rounds_total, "class": name, "warning": stopped})
        admm_value = best_value
        if args.refine_steps:
            best_ids, best_value = swap_refine(
                best_ids,
                objective,
                self.model,
                self.prefix_ids[label],
                self.allowed,
                args.refine_steps,
                gen,
                max_nll_increase=args.max_nll_increase,
            )
        nll = (-token_logprobs(self.model, self.start_ids, best_ids).mean(dim=1)).tolist()
        texts = self.tokenizer.batch_decode(best_ids, skip_special_tokens=True)
        if args.keep_prefix:
            prefix_text = self.tokenizer.decode(self.prefix_ids[label][0], skip_special_tokens=True)
            texts = [prefix_text + t for t in texts]
        return RoundRecord(
            round=round_idx,
            label=label,
            token_ids=best_ids.tolist(),
            texts=[t.strip() for t in texts],
            initial_distance=initial,
            admm_distance=admm_value,
            final_distance=best_value,
            per_text_distance=objective.per_text(best_ids),
            nll=nll,
            best_iteration=best_it,
            seconds=time.perf_counter() - start,
            stopped_early=stopped,
            x_step_seconds=x_seconds / max(x_steps, 1),
        )

    # ------------------------------------------------------------------ the run
    def _schedule(self) -> list[tuple[int, int, int]]:
        """(round index, label, texts in the round) for every round of the run."""
        plan, idx = [], 0
        for c in range(self.task.num_labels):
            left = self.args.per_class
            while left > 0:
                batch = min(self.args.texts_per_round, left)
                plan.append((idx, c, batch))
                idx += 1
                left -= batch
        return plan

    def train(self) -> SynthesisResult:
        """Run (or resume) the synthesis; returns the texts and writes ``output_dir``."""
        args = self.args
        self._prepare()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # Every process checks the output dir the same way first, so all refuse together; then the
        # main process alone records the run, and the others read what it found.
        self._load_finished_rounds(check_only=True)
        done = {r.round: r for r in self._load_finished_rounds()} if self.rank == 0 else {}
        barrier()
        if self.rank != 0:
            done = {r.round: r for r in self._load_finished_rounds(check_only=True)}
        plan = self._schedule()
        self.state = TrainerState(
            max_steps=len(plan) * args.outer_steps,
            num_train_epochs=len(plan),
            is_world_process_zero=self.rank == 0,
            is_local_process_zero=self.rank == 0,
        )
        self.state.global_step = len(done) * args.outer_steps
        self._event("on_train_begin")
        for round_idx, label, batch in plan:
            if round_idx in done or round_idx % self.world != self.rank:  # finished, or another process's
                continue
            record = self._run_round(round_idx, label, batch, len(plan))
            self._save_round(record)
            done[round_idx] = record
            self.state.global_step = len(done) * args.outer_steps  # also when a round stopped early
            self.state.epoch = len(done)
            self._event("on_epoch_end", finished_rounds=[done[i] for i in sorted(done)])
            self.log(
                {
                    "round": round_idx,
                    "rounds": len(plan),
                    "class": self.task.label_names[label],
                    "round_initial_distance": record.initial_distance,
                    "round_final_distance": record.final_distance,
                    "round_seconds": record.seconds,
                }
            )
            if self.control.should_training_stop:  # a callback asked to stop (as in Trainer)
                self.log(
                    {"warning": f"stopped by a callback after {len(done)} of {len(plan)} rounds; --resume goes on"}
                )
                break
        if self.world > 1:  # each process wrote its own rounds; all of them meet here
            done = {i: record for shard in gather(done) for i, record in shard.items()}
        rounds = [done[i] for i, _, _ in plan if i in done]
        result = self._result(rounds, calibrate=args.calibrate and self.rank == 0)
        self.log(
            {
                f"calibration/{name}/{key}": value
                for name, entry in result.metrics.get("calibration", {}).items()
                for key, value in entry.items()
                if isinstance(value, float)
            }
        )
        if self.rank == 0:  # the main process alone writes the dataset, config and metrics
            self._write_outputs(result)
        if self._attn_to_restore:
            self.model.set_attn_implementation(self._attn_to_restore)
        for p, flag in self._grad_flags:
            p.requires_grad_(flag)
        self._event("on_train_end", result=result)  # callbacks see the model as it was given
        return result

    synthesize = train

    def _result(self, rounds: list[RoundRecord], calibrate: bool = True) -> SynthesisResult:
        texts = [
            SyntheticText(text=t, label=r.label, round=r.round, match_distance=d, nll=n)
            for r in rounds
            for t, d, n in zip(r.texts, r.per_text_distance, r.nll)
        ]
        config = getattr(self.model, "config", None)
        metrics = {
            "generator": getattr(self.model, "hf_gradmm_name", getattr(config, "_name_or_path", "")),
            "task": {
                "name": self.task.name,
                "source": self.task.default_source,
                "hub_id": self.task.hub_id,
                "label_names": list(self.task.label_names),
                "label_words": list(self.task.label_words),
                "template": self.task.template,
            },
            "device": str(self.device),  # of the main process; each of `processes` computes on its own
            "processes": self.world,
            "target_seconds": self.target_seconds,
            "target_checkpoints": self.checkpoint_report,
            "dp": self.dp_report,
            "dp_local": self.dp_local,  # statistics of the private data: the builder never publishes them
            "seq_len": {self.task.label_names[c]: n for c, n in self.seq_lens.items()},
            "per_class": {},
        }
        for c, name in enumerate(self.task.label_names):
            mine = [r for r in rounds if r.label == c]
            if not mine:  # a run stopped by a callback before this class's first round
                continue
            count = sum(len(r.texts) for r in mine)
            metrics["per_class"][name] = {
                "texts": count,
                "initial_distance": sum(r.initial_distance for r in mine) / len(mine),
                "admm_distance": sum(r.admm_distance for r in mine) / len(mine),
                "final_distance": sum(r.final_distance for r in mine) / len(mine),
                "mean_text_distance": sum(d for r in mine for d in r.per_text_distance) / count,
                "mean_nll": sum(n for r in mine for n in r.nll) / count,
                "mean_nll_words_shuffled": self._shuffled_nll([t for r in mine for t in r.texts]),
                "round_seconds": sum(r.seconds for r in mine) / len(mine),
                "x_step_seconds": sum(r.x_step_seconds for r in mine) / len(mine),
            }
        if calibrate:
            metrics["calibration"] = self.calibration(rounds)
        return SynthesisResult(texts, rounds, list(self.task.label_names), metrics, str(self.output_dir))

    # ------------------------------------------------------------------ calibration
    def _text_ids(self, texts: list[str], length: int | None = None) -> list[torch.Tensor]:
        return [
            torch.tensor(self.tokenizer(t, add_special_tokens=False)["input_ids"][:length], device=self.device)
            for t in texts
        ]

    def _batch_distance_of_texts(self, objective: MatchingObjective, label: int, texts: list[str]) -> float:
        """Batch distance of real texts (each with class ``label``'s label word) to ``objective``'s target,
        under ``objective``'s model (its checkpoint must be active)."""
        prompts = [self.task.format_prompt(t) for t in texts]
        labels = torch.full((len(prompts),), self.label_tokens[label], dtype=torch.long, device=self.device)
        if objective.matched.is_lm_head:
            batch = encode_prompts(self.tokenizer, prompts).to(self.device)
            a, h = lm_head_example_factors(objective.model, batch, labels)
            return float(objective.distance_from_factors(a, h))
        # General path: equal-length texts are needed for an embeddings batch; score one by one and average.
        values = [objective.value(ids[None]) for ids in self._text_ids(texts)]
        return sum(values) / len(values)

    def _shuffled_nll(self, texts: list[str]) -> float:
        rng = random.Random(self.args.seed)
        shuffled = []
        for t in texts:
            words = t.split()
            rng.shuffle(words)
            shuffled.append(" ".join(words))
        return mean_text_nll(self.model, self.tokenizer, shuffled)

    def calibration(self, rounds: list[RoundRecord]) -> dict:
        """Per class, distances to the class target of (a) held-out same-class real texts, (b) other
        classes' real texts given this class's label word, (c) texts the model samples from the same
        prefix, (d) the GRADMM batches, initial and final; plus (d) against the other targets. With
        several target checkpoints, (a)-(d) at each checkpoint too (``per_checkpoint``); the top-level
        figures are then their weighted means, the objective the run minimised."""
        out = {}
        batch = self.args.texts_per_round
        all_tokens = allowed_vocabulary(self.tokenizer, self.allowed.shape[0], "all")
        for c, name in enumerate(self.task.label_names):
            heldout = self.pool[c]["heldout"][:batch]
            others = [t for o in self.pool if o != c for t in self.pool[o]["heldout"]][:batch]
            gen = torch.Generator().manual_seed(self.args.seed + 7919 * (c + 1))
            sampled = sample_texts(self.model, self.prefix_ids[c], all_tokens, batch, self.seq_lens[c], gen)
            mine = [r for r in rounds if r.label == c]
            if not mine:
                continue
            per_checkpoint = {}
            for k, (checkpoint, objective) in enumerate(self.parts[c]):
                with checkpoint.active():
                    per_checkpoint[checkpoint.name] = {
                        "heldout_same_class": self._batch_distance_of_texts(objective, c, heldout) if heldout else None,
                        "other_classes": self._batch_distance_of_texts(objective, c, others) if others else None,
                        "model_sampled": objective.value(sampled),
                        "gradmm_final": sum(objective.value(torch.tensor(r.token_ids)) for r in mine) / len(mine),
                        "gradmm_final_to_other_targets": {
                            self.task.label_names[o]: sum(
                                self.parts[o][k][1].value(torch.tensor(r.token_ids)) for r in mine
                            )
                            / len(mine)
                            for o in self.parts
                            if o != c
                        },
                    }

            weights = {ckpt.name: ckpt.weight for ckpt, _ in self.parts[c]}

            def weighted(*keys: str, weights=weights, per_checkpoint=per_checkpoint) -> float | None:
                values = []
                for ckpt_name, w in weights.items():
                    value = per_checkpoint[ckpt_name]
                    for key in keys:
                        value = value[key]
                    values.append((w, value))
                return None if any(v is None for _, v in values) else sum(w * v for w, v in values)

            entry = {
                "heldout_same_class": weighted("heldout_same_class"),
                "other_classes": weighted("other_classes"),
                "model_sampled": weighted("model_sampled"),
                "model_sampled_nll": float(-token_logprobs(self.model, self.start_ids, sampled).mean()),
                "gradmm_initial": sum(r.initial_distance for r in mine) / len(mine),
                "gradmm_admm": sum(r.admm_distance for r in mine) / len(mine),
                "gradmm_final": sum(r.final_distance for r in mine) / len(mine),
                "gradmm_final_to_other_targets": {
                    self.task.label_names[o]: weighted("gradmm_final_to_other_targets", self.task.label_names[o])
                    for o in self.parts
                    if o != c
                },
                "sampled_examples": self.tokenizer.batch_decode(sampled[:3], skip_special_tokens=True),
            }
            if len(self.parts[c]) > 1:
                entry["per_checkpoint"] = per_checkpoint
            out[name] = entry
        return out

    # ------------------------------------------------------------------ outputs
    def _write_outputs(self, result: SynthesisResult) -> None:
        out = self.output_dir
        dataset = result.to_dataset()
        dataset.save_to_disk(str(out))
        config = self.args.to_dict()
        _atomic_write(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        _atomic_write(out / "metrics.json", json.dumps(result.metrics, indent=2))
