"""Datasets for training audits, loaded from local files only (nothing is downloaded)."""

from dpaudit.data.datasets import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
