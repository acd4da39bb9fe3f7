"""Large data: sparse and backed matrices without densifying, several processes, precision."""

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scvi
from scipy import sparse

import scgmdvae
from scgmdvae import CGMDVAE
from scgmdvae._validation import check_data_matrix, iter_value_chunks
from scgmdvae.metrics import adjusted_rand_index

TESTS = Path(__file__).resolve().parent


def run_script(name: str, *args: str, timeout: int = 300) -> dict:
    """Run ``tests/<name>`` in a fresh Python and return the JSON it writes to its first arg."""
    out = Path(args[0])
    subprocess.run(
        [sys.executable, str(TESTS / name), *args], check=True, timeout=timeout, cwd=TESTS.parent
    )
    return json.loads(out.read_text())


def write_backed(adata: ad.AnnData, path: Path) -> ad.AnnData:
    adata.write_h5ad(path)
    return ad.read_h5ad(path, backed="r")


@pytest.mark.parametrize(
    "mode", ["memory", pytest.param("backed", marks=pytest.mark.slow)], ids=str
)
def test_sparse_data_are_never_densified(tmp_path, mode):
    """Setup, training and write_results fit in a budget far below the dense matrix's size."""
    result = run_script("_sparse_memory.py", str(tmp_path / "out.json"), mode)
    assert result["n_latent_rows"] == 40_000 and result["finite"]
    # A whole-matrix copy needs the dense size (1.9 GB) on top; the address-space cap in the
    # script already turns it into a MemoryError. The growth also holds freed minibatch buffers
    # that the C allocator keeps, which vary with the environment (180-580 MB measured).
    assert result["rss_growth_bytes"] < result["dense_bytes"] / 2


@pytest.mark.parametrize("layout", ["csr", "csc", "dense", "backed"])
def test_check_data_matrix_finds_bad_values_in_the_last_chunk(tmp_path, layout, monkeypatch):
    matrix = sparse.random(50, 20, density=0.3, format="csr", dtype=np.float32, random_state=0)
    matrix.data = np.ceil(matrix.data * 5)
    matrix[49, 19] = 2.5
    if layout == "backed":
        data = write_backed(ad.AnnData(X=matrix), tmp_path / "x.h5ad").X
    else:
        data = {"csr": matrix, "csc": matrix.tocsc(), "dense": matrix.toarray()}[layout]
    monkeypatch.setattr("scgmdvae._validation.CHUNK_ELEMENTS", 40)
    check_data_matrix(data, "normal")
    with pytest.raises(ValueError, match="raw counts"):
        check_data_matrix(data, "nb")


def test_value_chunks_cover_every_stored_value_in_bounded_pieces(tmp_path):
    matrix = sparse.random(30, 10, density=0.5, format="csr", dtype=np.float32, random_state=1)
    backed = write_backed(ad.AnnData(X=matrix), tmp_path / "x.h5ad").X
    for data, expected in [(matrix, matrix.data), (backed, matrix.data)]:
        chunks = list(iter_value_chunks(data, chunk_elements=25))
        assert max(chunk.size for chunk in chunks) <= 25
        np.testing.assert_array_equal(np.concatenate(chunks), expected)
    dense_chunks = list(iter_value_chunks(matrix.toarray(), chunk_elements=25))
    assert all(chunk.size == 20 for chunk in dense_chunks[:-1])
    np.testing.assert_array_equal(np.concatenate(dense_chunks), matrix.toarray().ravel())


def test_backed_anndata_trains_and_matches_in_memory_inference(tmp_path, trained_blobs):
    model, adata = trained_blobs
    on_disk = adata.copy()
    on_disk.X = sparse.csr_matrix(on_disk.layers["counts"])
    backed = write_backed(on_disk, tmp_path / "blobs.h5ad")
    assert backed.isbacked
    np.testing.assert_allclose(
        model.get_latent_representation(backed), model.get_latent_representation(), atol=1e-5
    )
    with pytest.raises(ValueError, match="sorted"):
        model.get_latent_representation(backed, indices=[5, 3, 700])
    np.testing.assert_allclose(
        model.get_latent_representation(backed, indices=[3, 5, 700]),
        model.get_latent_representation(indices=[3, 5, 700]),
        atol=1e-5,
    )
    scvi.settings.seed = 0
    CGMDVAE.setup_anndata(backed, layer="counts", condition_key="condition")
    backed_model = CGMDVAE(backed, n_clusters=4)
    backed_model.train(max_epochs=60, enable_progress_bar=False)
    backed_model.write_results(backed)
    ari = adjusted_rand_index(backed.obs["cluster"], backed.obs["cgmdvae_cluster"])
    assert ari > 0.9


def test_two_cpu_processes_match_single_process_quality(tmp_path, trained_blobs):
    """DDP on 2 CPU processes (gloo), half the batch each, reaches the single process's ARI."""
    model, adata = trained_blobs
    single = adjusted_rand_index(adata.obs["cluster"], model.predict_clusters())
    ddp = run_script(
        "_ddp_train.py", str(tmp_path / "ddp.json"), "ddp_find_unused_parameters_true", "2", "64"
    )
    assert ddp["devices"] == 2
    assert ddp["ari"] >= single - 0.1


def test_mixed_precision_is_passed_to_lightning():
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=4, n_conditions=2)
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, n_clusters=4)
    model.train(max_epochs=60, precision="bf16-mixed", enable_progress_bar=False)
    assert model.trainer.precision == "bf16-mixed"
    latent = model.get_latent_representation()
    assert np.isfinite(latent).all()
    assert adjusted_rand_index(adata.obs["cluster"], model.predict_clusters()) > 0.9
