"""Does the synthetic data train models? Baselines, the harness, the membership audit and TransferCallback.

The fine-tuning recipe itself (:class:`FinetuneConfig`, :func:`finetune`) is one layer down, in
``hf_gradmm/finetune.py``, because the trajectory targets fine-tune with it too.
"""

from hf_gradmm.evaluation.harness import ALL_METHODS, EvaluateArguments, run_evaluation
from hf_gradmm.evaluation.transfer import TransferCallback
from hf_gradmm.finetune import FinetuneConfig, finetune

__all__ = ["ALL_METHODS", "EvaluateArguments", "FinetuneConfig", "TransferCallback", "finetune", "run_evaluation"]
