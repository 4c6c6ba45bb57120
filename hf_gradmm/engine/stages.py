"""Wall-clock seconds per stage of a synthesis, for ``hf-gradmm bench round`` and the profile.

The engine marks its stages with :func:`stage` (a no-op unless a caller is recording), and
:func:`recording` collects them: ``with recording() as seconds: run_round(...)`` leaves
``seconds`` as ``{stage name: seconds}``. Stages do not nest; CUDA work is synchronised at each
boundary so GPU time lands in the stage that launched it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_seconds: dict[str, float] | None = None


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the block's wall time under ``name`` while a :func:`recording` is open."""
    if _seconds is None:
        yield
        return
    _sync()
    start = time.perf_counter()
    try:
        yield
    finally:
        _sync()
        _seconds[name] = _seconds.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect every :func:`stage` inside the block into the dict it yields."""
    global _seconds
    previous, _seconds = _seconds, {}
    try:
        yield _seconds
    finally:
        _seconds = previous
