"""Several processes, launched by accelerate: who am I, gather, wait, and the launcher itself.

``accelerate launch --multi_gpu --num_processes N -m hf_gradmm.cli synthesize ...`` (or
``hf-gradmm synthesize --num-processes N``, which runs exactly that) starts N processes;
``torch.distributed`` is then initialised by accelerate's ``PartialState`` (NCCL on GPUs, gloo
on CPUs). A single process never initialises anything here, so nothing changes for it.
"""

from __future__ import annotations

import os
import subprocess
import sys


def _cpu_launch() -> bool:
    """Whether the processes run on CPUs: no CUDA, or the launch asked for CPUs
    (``ACCELERATE_USE_CPU``, set by ``launch(use_cpu=True)``)."""
    import torch

    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def check_gpus(num_processes: int, use_cpu: bool = False) -> None:
    """Refuse more GPU processes than GPUs (each process computes on its own), naming the fixes."""
    import torch

    if use_cpu or _cpu_launch() or num_processes <= torch.cuda.device_count():
        return
    raise ValueError(
        f"{num_processes} processes need {num_processes} GPUs (one each) and this machine has "
        f"{torch.cuda.device_count()}: use --num-processes {torch.cuda.device_count()}, or --use-cpu to run the "
        "processes on the CPU."
    )


def _state():
    from accelerate import PartialState

    return PartialState(cpu=_cpu_launch())


def world() -> tuple[int, int]:
    """``(rank, number of processes)``; ``(0, 1)`` outside a multi-process launch."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes <= 1:
        return 0, 1
    check_gpus(int(os.environ.get("LOCAL_WORLD_SIZE", processes)))
    state = _state()
    return state.process_index, state.num_processes


def device(use_cpu: bool = False):
    """The ``torch.device`` this process computes on: its own GPU under a multi-GPU launch
    (``cuda:<local rank>``, as accelerate assigns it), else ``cuda`` when one is available,
    else the CPU; ``use_cpu`` forces the CPU (as ``TrainingArguments.use_cpu``)."""
    import torch

    if use_cpu or _cpu_launch():
        return torch.device("cpu")
    if world()[1] > 1:
        return _state().device
    return torch.device("cuda", torch.cuda.current_device())


def gather(obj) -> list:
    """Every process's ``obj``, in rank order, on every process (picklable objects; move tensors
    to the CPU first, or they arrive on the sender's device)."""
    if world()[1] == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def barrier() -> None:
    if world()[1] > 1:
        _state().wait_for_everyone()


def finish() -> None:
    """End a multi-process run that succeeded: wait for every process, then destroy the process
    group while the interpreter is still whole. Left to the interpreter's exit, gloo's worker
    threads can abort a process ("terminate called without an active exception", SIGABRT) after
    its work is done. Call it only on success: a failed process must not wait for the others."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(argv: list[str], num_processes: int, use_cpu: bool = False) -> int:
    """Rerun ``hf-gradmm <argv>`` as ``num_processes`` processes with ``accelerate launch``.

    ``--multi_gpu`` makes accelerate start them with torchrun; on a machine without GPUs the
    processes then use the gloo backend on the CPU (one thread each unless OMP_NUM_THREADS says
    otherwise); ``use_cpu`` does the same on a machine with GPUs. Returns the launch's exit status.
    """
    check_gpus(num_processes, use_cpu)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.accelerate_cli",
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "hf_gradmm.cli",
        *argv,
    ]
    env = {**os.environ, **({"ACCELERATE_USE_CPU": "true"} if use_cpu else {})}
    return subprocess.run(command, check=False, env=env).returncode
