"""Run by tests/test_distributed.py under `accelerate launch`: one class target, sharded over the processes."""

import sys

import torch

from hf_gradmm.distributed import finish, world
from hf_gradmm.engine.gradients import class_target, select_matched
from hf_gradmm.models import load_model_and_tokenizer
from hf_gradmm.tasks import get_task, label_token_ids, load_task

model_dir, matched_spec, out = sys.argv[1:4]
model, tok = load_model_and_tokenizer(model_dir)
data, task = load_task(get_task("rotten_tomatoes"))
prompts = [task.format_prompt(t) for t in data["train"]["text"][:37]]
target = class_target(
    model, tok, select_matched(model, matched_spec), prompts, label_token_ids(task, tok)[1], 8, shard=world()
)
if world()[0] == 0:
    torch.save(target.tensors, out)
finish()  # without it, gloo can abort a process at exit after the work is done
