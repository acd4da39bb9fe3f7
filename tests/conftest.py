import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """One torch thread: tiny models gain nothing from more, and CI machines have two cores."""
    import scvi

    scvi.settings.num_threads = 1


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Directory with the real data files (``$SCGMDVAE_SHARED_DATA`` or ``../shared/data``)."""
    path = Path(os.environ.get("SCGMDVAE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data directory not found: {path}")
    return path


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same scvi-tools seed."""
    import scvi

    scvi.settings.seed = 0


@pytest.fixture(scope="session")
def trained_blobs():
    """An unsupervised model trained on synthetic blobs with the condition registered."""
    import scvi

    import scgmdvae

    scvi.settings.seed = 0
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=4, n_conditions=2)
    scgmdvae.CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = scgmdvae.CGMDVAE(adata, n_clusters=4)
    model.train(max_epochs=60, enable_progress_bar=False)
    return model, adata
