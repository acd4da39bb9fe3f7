"""Train c*GMΔVÆ on synthetic blobs, optionally with several processes; used by test_scale.py.

Run as ``python tests/_ddp_train.py OUT.json STRATEGY DEVICES BATCH_SIZE``. Lightning's DDP
launcher starts the other processes by running this script again; the process of global rank
0 writes the adjusted Rand index of the predicted clusters and the training time to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import scvi
import torch

import scgmdvae
from scgmdvae.metrics import adjusted_rand_index


def main(out: Path, strategy: str, devices: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    scvi.settings.seed = 0
    adata = scgmdvae.data.synthetic_blobs(n_cells_per_group=100, n_clusters=4, n_conditions=2)
    scgmdvae.CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = scgmdvae.CGMDVAE(adata, n_clusters=4)
    start = time.perf_counter()
    model.train(
        max_epochs=60,
        batch_size=batch_size,
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        enable_progress_bar=False,
    )
    seconds = time.perf_counter() - start
    if model.trainer.global_rank == 0:
        ari = adjusted_rand_index(adata.obs["cluster"], model.predict_clusters())
        out.write_text(json.dumps({"ari": ari, "seconds": seconds, "devices": devices}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
