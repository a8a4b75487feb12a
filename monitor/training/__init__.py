"""Training, evaluating and running classifiers on labelled clips (`har-monitor train / evaluate / predict`)."""

from monitor.training.features import Sampling, extract
from monitor.training.fit import fit_head, windows_dataset

__all__ = ["Sampling", "extract", "fit_head", "windows_dataset"]
