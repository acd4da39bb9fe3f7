"""Synthetic data and loaders for the real data sets."""

from ._loaders import load_kang2018, load_mnist
from ._sparse import synthetic_sparse_counts
from ._synthetic import synthetic_blobs

__all__ = ["load_kang2018", "load_mnist", "synthetic_blobs", "synthetic_sparse_counts"]
