import argparse
import hashlib
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import scgmdvae
from scgmdvae.cli import _parser, main


@pytest.fixture
def blobs_file(tmp_path):
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=30, n_clusters=3, n_conditions=2)
    adata.X = np.log1p(adata.layers["counts"])
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


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BAD_INPUTS = {
    "missing input": (["{tmp}/missing.h5ad", "--output", "{tmp}/o.h5ad"], "does not exist"),
    "directory input": (["{tmp}", "--output", "{tmp}/o.h5ad"], "is a directory"),
    "output is input": (["{input}", "--output", "{input}", "--overwrite"], "never overwritten"),
    "output is a directory": (["{input}", "--output", "{tmp}"], "not a directory"),
    "output exists": (["{input}", "--output", "{tmp}/existing.h5ad"], "--overwrite"),
    "output folder missing": (["{input}", "--output", "{tmp}/no/o.h5ad"], "does not exist"),
    "unknown layer": (["{input}", "--output", "{tmp}/o.h5ad", "--layer", "nope"], "nope"),
    "unknown key": (
        ["{input}", "--output", "{tmp}/o.h5ad", "--layer", "counts", "--condition-key", "x"],
        "'x'",
    ),
    "log data under nb": (["{input}", "--output", "{tmp}/o.h5ad"], "--layer"),
    "one cluster": (
        ["{input}", "--output", "{tmp}/o.h5ad", "--layer", "counts", "--n-clusters", "1"],
        "n_clusters=1",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_fit_refuses_bad_input_on_one_line_before_training(case, blobs_file, tmp_path, capsys):
    (tmp_path / "existing.h5ad").write_bytes(b"")
    arguments, message = BAD_INPUTS[case]
    arguments = [a.format(tmp=tmp_path, input=blobs_file) for a in arguments]
    before = _digest(blobs_file)
    assert main(["fit", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("scgmdvae: error:") and message in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert _digest(blobs_file) == before
    assert not (tmp_path / "o.h5ad").exists()


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_fit_refuses_non_positive_epochs(epochs, blobs_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(blobs_file), "--output", str(tmp_path / "o"), "--max-epochs", epochs])
    assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_fit_help_describes_every_option():
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    fit = commands.choices["fit"]
    assert [action.option_strings for action in fit._actions if not action.help] == []
    assert "400 up to 20,000 cells" in " ".join(fit.format_help().split())


def test_fit_through_the_shell_summarises_and_keeps_the_input(blobs_file, tmp_path):
    before = _digest(blobs_file)
    output = tmp_path / "out.h5ad"
    command = [sys.executable, "-m", "scgmdvae.cli", "fit", str(blobs_file), "--output"]
    options = ["--layer", "counts", "--n-clusters", "3", "--max-epochs", "3", "--seed", "1"]
    result = subprocess.run([*command, str(output), *options], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"wrote {output}" in result.stdout and "clusters (name: cells)" in result.stdout
    assert _digest(blobs_file) == before
    again = subprocess.run([*command, str(blobs_file), *options], capture_output=True, text=True)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert _digest(blobs_file) == before


def test_demo_writes_h5ad_and_umap(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), "--max-epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ARI" in printed and "NMI" in printed
    result = ad.read_h5ad(tmp_path / "pbmc68k_cgmdvae.h5ad")
    assert {"X_cgmdvae", "X_umap"} <= set(result.obsm)
    assert (tmp_path / "umap_pbmc68k_cgmdvae.png").stat().st_size > 10_000
    sc.tl.rank_genes_groups(result, "cgmdvae_cluster")
    assert set(result.uns["rank_genes_groups"]["names"].dtype.names) == set(
        result.obs["cgmdvae_cluster"].cat.categories
    )
    sc.pl.dotplot(result, result.var_names[:5], groupby="cgmdvae_cluster", show=False)
