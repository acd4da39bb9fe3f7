import anndata as ad
import numpy as np
import pytest

import scgmdvae
from scgmdvae.cli import main


@pytest.fixture
def blobs_file(tmp_path):
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=30, n_clusters=3, n_conditions=2)
    path = tmp_path / "blobs.h5ad"
    adata.write_h5ad(path)
    return path


def test_fit_writes_results_and_model(blobs_file, tmp_path):
    output, model_dir = tmp_path / "out.h5ad", tmp_path / "model"
    code = main(
        [
            "fit",
            str(blobs_file),
            "--output",
            str(output),
            "--layer",
            "counts",
            "--condition-key",
            "condition",
            "--n-clusters",
            "3",
            "--max-epochs",
            "3",
            "--model-dir",
            str(model_dir),
        ]
    )
    assert code == 0
    result = ad.read_h5ad(output)
    assert result.obsm["X_cgmdvae"].shape == (result.n_obs, 10)
    clusters = result.obs["cgmdvae_cluster"]
    assert set(clusters.cat.categories) == set(clusters) <= {"0", "1", "2"}
    reloaded = scgmdvae.CGMDVAE.load(str(model_dir), adata=result)
    np.testing.assert_allclose(reloaded.get_latent_representation(), result.obsm["X_cgmdvae"])


def test_fit_reports_bad_key_on_one_line_and_leaves_input(blobs_file, tmp_path, capsys):
    before = blobs_file.read_bytes()
    code = main(["fit", str(blobs_file), "--output", str(tmp_path / "o.h5ad"), "--layer", "nope"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("scgmdvae: error:") and "nope" in error
    assert error.count("\n") == 1
    assert blobs_file.read_bytes() == before
    assert not (tmp_path / "o.h5ad").exists()


def test_demo_writes_h5ad_and_umap(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), "--max-epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ARI" in printed and "NMI" in printed
    result = ad.read_h5ad(tmp_path / "pbmc68k_cgmdvae.h5ad")
    assert {"X_cgmdvae", "X_umap"} <= set(result.obsm)
    assert (tmp_path / "umap_pbmc68k_cgmdvae.png").stat().st_size > 10_000
