"""Run the whole workflow on a sparse matrix whose dense form is over a memory budget.

Run as ``python tests/_sparse_memory.py OUT.json BACKED``; used by test_scale.py. The matrix
(40,000 cells × 12,000 genes, 0.2 % non-zeros) takes 1.9 GB dense in float32 but about 8 MB
as CSR. After the data are made, the address space is capped at its current size plus
``BUDGET_BYTES`` (1.5 GiB, less than the dense matrix's 1.79 GiB), so densifying the matrix
raises ``MemoryError``; the peak resident-set growth over the same span is written to OUT.json.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np
import psutil
import scvi
import torch
from anndata import AnnData, read_h5ad
from scipy import sparse

import scgmdvae

N_CELLS, N_GENES, DENSITY = 40_000, 12_000, 0.002
BUDGET_BYTES = 3 << 29


def make_adata(path: Path, backed: bool) -> AnnData:
    rng = np.random.default_rng(0)
    matrix = sparse.random(
        N_CELLS, N_GENES, density=DENSITY, format="csr", dtype=np.float32, random_state=rng
    )
    matrix.data = np.ceil(matrix.data * 5)
    conditions = np.array(["a", "b"])[rng.integers(2, size=N_CELLS)]
    adata = AnnData(X=matrix, obs={"condition": conditions})
    adata.obs_names = [f"cell_{i}" for i in range(N_CELLS)]
    if not backed:
        return adata
    adata.write_h5ad(path)
    return read_h5ad(path, backed="r")


def main(out: Path, backed: bool) -> None:
    torch.set_num_threads(1)
    scvi.settings.seed = 0
    adata = make_adata(out.with_suffix(".h5ad"), backed)
    process = psutil.Process()
    start_rss = process.memory_info().rss
    resource.setrlimit(resource.RLIMIT_AS, (process.memory_info().vms + BUDGET_BYTES, -1))
    scgmdvae.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = scgmdvae.CGMDVAE(adata, n_clusters=3, n_hidden=16, n_latent=4, n_latent_w=2)
    model.train(max_epochs=1, limit_train_batches=5, enable_progress_bar=False)
    model.write_results(adata)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.write_text(
        json.dumps(
            {
                "dense_bytes": N_CELLS * N_GENES * 4,
                "rss_growth_bytes": peak_rss - start_rss,
                "n_latent_rows": int(adata.obsm["X_cgmdvae"].shape[0]),
                "finite": bool(np.isfinite(adata.obsm["X_cgmdvae"]).all()),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] == "backed")
