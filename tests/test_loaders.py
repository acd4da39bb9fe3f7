from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scgmdvae.data import load_kang2018, load_mnist
from scgmdvae.data._loaders import KANG2018_FILENAME, MNIST_FILENAME


@pytest.fixture(scope="module")
def mnist_shared(shared_data_dir: Path) -> ad.AnnData:
    path = shared_data_dir / MNIST_FILENAME
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return load_mnist(path)


def test_load_kang2018_from_data_dir_env(shared_data_dir, monkeypatch, tmp_path):
    if not (shared_data_dir / KANG2018_FILENAME).is_file():
        pytest.skip(f"{KANG2018_FILENAME} not in {shared_data_dir}")
    monkeypatch.setenv("SCGMDVAE_DATA_DIR", str(shared_data_dir))
    monkeypatch.chdir(tmp_path)
    adata = load_kang2018()
    assert adata.shape == (13_999, 14_053)
    assert {"condition", "cell_type", "donor"} <= set(adata.obs.columns)
    assert adata.obs["condition"].value_counts().to_dict() == {"stim": 7_451, "ctrl": 6_548}
    assert adata.obs["cell_type"].notna().sum() == 6_433 + 2_636
    assert sp.issparse(adata.X)
    counts = adata.X[:200].toarray()
    np.testing.assert_array_equal(counts, np.round(counts))


def test_load_kang2018_missing_file_raises(monkeypatch, tmp_path):
    monkeypatch.delenv("SCGMDVAE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="GSE96583"):
        load_kang2018()
    with pytest.raises(FileNotFoundError, match="GSE96583"):
        load_kang2018(tmp_path / "absent.h5ad")


def test_load_mnist_from_path(mnist_shared):
    assert mnist_shared.shape == (70_000, 784)
    assert mnist_shared.X.dtype == np.float32
    assert mnist_shared.X.min() == 0 and mnist_shared.X.max() == 255
    assert mnist_shared.obs["split"].value_counts().to_dict() == {
        "train": 50_000,
        "valid": 10_000,
        "test": 10_000,
    }
    assert list(mnist_shared.obs["label"].cat.categories) == [str(d) for d in range(10)]


def _write_fake_npz(path: Path, n_train: int, n_test: int) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test, dtype=np.uint8),
    )


def test_load_mnist_downloads_caches_and_matches_shared_layout(mnist_shared, tmp_path):
    npz = tmp_path / "mnist.npz"
    _write_fake_npz(npz, n_train=10_005, n_test=3)
    cache = tmp_path / "cache" / "mnist.h5ad"
    adata = load_mnist(cache, url=npz.as_uri())
    assert cache.is_file()
    with np.load(npz) as arrays:
        np.testing.assert_array_equal(adata.X[:5], arrays["x_train"][:5].reshape(5, -1))
        np.testing.assert_array_equal(adata.obs["label"][-3:].astype(int), arrays["y_test"])
    assert adata.obs["split"].value_counts().to_dict() == {"train": 5, "valid": 10_000, "test": 3}
    assert adata.obs["split"].iloc[[4, 5, -4, -3]].tolist() == ["train", "valid", "valid", "test"]
    for key in ("label", "split"):
        assert adata.obs[key].dtype == mnist_shared.obs[key].dtype
    assert adata.X.dtype == mnist_shared.X.dtype
    assert adata.obs_names[-1] == f"img{adata.n_obs - 1}"
    assert list(adata.var_names) == list(mnist_shared.var_names)
    # A second call reads the cache instead of downloading.
    npz.unlink()
    assert load_mnist(cache, url=npz.as_uri()).shape == adata.shape
