"""From a synthesis output to a published dataset: filtering (filters.py), the memorisation report
(memorisation.py), the dataset card (card.py), the builder that runs them (builder.py) and the Hub
push (hub.py)."""

from hf_gradmm.dataset.builder import BuilderConfig, SyntheticDatasetBuilder
from hf_gradmm.dataset.hub import HubPushError, push_dataset_folder

__all__ = ["BuilderConfig", "HubPushError", "SyntheticDatasetBuilder", "push_dataset_folder"]
