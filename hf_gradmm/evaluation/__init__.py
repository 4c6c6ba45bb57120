"""Does the synthetic data train models? Fine-tuning, baselines, the harness and TransferCallback."""

from hf_gradmm.evaluation.callback import TransferCallback
from hf_gradmm.evaluation.finetune import FinetuneConfig, finetune
from hf_gradmm.evaluation.harness import ALL_METHODS, EvaluateArguments, run_evaluation

__all__ = ["ALL_METHODS", "EvaluateArguments", "FinetuneConfig", "TransferCallback", "finetune", "run_evaluation"]
