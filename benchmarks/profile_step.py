"""Profile c*GMΔVÆ training steps on Kang-sized minibatches with ``torch.profiler``.

Usage, from the repository root::

    python -m benchmarks.profile_step [--model cgmdvae|scvi] [--steps 300] [--batch-size 128]

Runs ``steps`` Adam steps (forward, loss, backward) of the module of c*GMΔVÆ (K = 8) or of
scVI, each as built by :mod:`benchmarks.speed` (same architecture and likelihood), on
minibatches of the Kang counts (2,000 HVGs, condition registered); prints the time per step
and the operators that take the most CPU time.
"""

from __future__ import annotations

import argparse
import time

import torch

torch.set_num_threads(1)

from benchmarks._common import load_kang_hvg  # noqa: E402
from benchmarks.speed import MODELS  # noqa: E402
from scvi import REGISTRY_KEYS  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402


def minibatches(model, batch_size: int, steps: int) -> list[dict[str, torch.Tensor]]:
    """``steps`` random minibatches in the form the training plan passes to the module."""
    loader = model._make_data_loader(model.adata, batch_size=batch_size, shuffle=True)
    batches = []
    while len(batches) < steps:
        batches.extend(
            batch for batch, _ in zip(loader, range(steps - len(batches)), strict=False)
        )
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cgmdvae", "scvi"], default="cgmdvae")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    adata = load_kang_hvg()
    model = MODELS["scVI" if args.model == "scvi" else "c*GMΔVÆ"](adata)
    module = model.module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    batches = minibatches(model, args.batch_size, args.steps)

    def step(tensors: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad()
        _, _, losses = module(tensors)
        losses.loss.backward()
        optimizer.step()

    for tensors in batches[:10]:
        step(tensors)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for tensors in batches:
            step(tensors)
        seconds = time.perf_counter() - start
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(
        f"{args.model}: {args.steps} steps of {args.batch_size} cells ({adata.n_vars} genes, "
        f"{REGISTRY_KEYS.BATCH_KEY} registered): {seconds / args.steps * 1e3:.2f} ms/step "
        "under the profiler"
    )


if __name__ == "__main__":
    main()
