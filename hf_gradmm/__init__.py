"""hf_gradmm: readable synthetic training text by gradient matching (GRADMM) for the HF stack.

The public API. Where things are: engine/ (the maths, pure torch), targets/ (what is matched),
synthesizer.py (the Trainer-style run), rundir.py (its output folder), dataset/ (filtering, card,
Hub), evaluation/ (does the data train models?), cli/ (the hf-gradmm command).
"""

from hf_gradmm.callbacks import JsonlLoggerCallback, SynthesisProgressCallback
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.dataset import BuilderConfig, SyntheticDatasetBuilder
from hf_gradmm.evaluation import FinetuneConfig, TransferCallback
from hf_gradmm.models import DEFAULT_MODEL, MODELS, load_model_and_tokenizer
from hf_gradmm.synthesizer import GradMatchSynthesizer, SynthesisError, SynthesisResult, SyntheticText
from hf_gradmm.tasks import DEFAULT_TASK, TASKS, TaskSpec, get_task, label_token_ids, load_task, resolve_task
from hf_gradmm.version import __version__

__all__ = [
    "BuilderConfig",
    "FinetuneConfig",
    "SyntheticDatasetBuilder",
    "TransferCallback",
    "DEFAULT_MODEL",
    "DEFAULT_TASK",
    "GradMatchConfig",
    "GradMatchSynthesizer",
    "JsonlLoggerCallback",
    "SynthesisError",
    "SynthesisProgressCallback",
    "SynthesisResult",
    "SyntheticText",
    "MODELS",
    "TASKS",
    "TaskSpec",
    "__version__",
    "get_task",
    "label_token_ids",
    "load_model_and_tokenizer",
    "load_task",
    "resolve_task",
]
