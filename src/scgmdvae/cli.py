"""Command line: ``scgmdvae demo`` and ``scgmdvae fit``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anndata as ad

from ._demo import run_demo
from .model import CGMDVAE

USER_ERRORS = (KeyError, ValueError, FileNotFoundError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scgmdvae", description="c*GMΔVÆ clustering and label transfer for AnnData files."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train on scanpy's bundled PBMC data and report")
    demo.add_argument("--output-dir", default="scgmdvae_demo")
    demo.add_argument("--max-epochs", type=int, default=200)

    fit = commands.add_parser("fit", help="train on an .h5ad file and write the results")
    fit.add_argument("input", help="input .h5ad file")
    fit.add_argument("--output", required=True, help="output .h5ad file with the results")
    fit.add_argument("--layer", default=None, help="layer with the data (default: X)")
    fit.add_argument("--condition-key", default=None)
    fit.add_argument("--labels-key", default=None)
    fit.add_argument("--unlabeled-category", default="Unknown")
    fit.add_argument("--n-clusters", type=int, default=None)
    fit.add_argument(
        "--gene-likelihood", default="nb", choices=["nb", "zinb", "poisson", "normal", "bernoulli"]
    )
    fit.add_argument("--max-epochs", type=int, default=None)
    fit.add_argument("--model-dir", default=None, help="also save the trained model here")
    return parser


def _fit(args: argparse.Namespace) -> None:
    adata = ad.read_h5ad(args.input)
    CGMDVAE.setup_anndata(
        adata,
        layer=args.layer,
        condition_key=args.condition_key,
        labels_key=args.labels_key,
        unlabeled_category=args.unlabeled_category,
    )
    model = CGMDVAE(adata, n_clusters=args.n_clusters, gene_likelihood=args.gene_likelihood)
    model.train(max_epochs=args.max_epochs)
    model.write_results(adata)
    adata.write_h5ad(args.output)
    if args.model_dir is not None:
        model.save(args.model_dir, overwrite=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (2 for bad input, with a one-line error)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            scores = run_demo(args.output_dir, args.max_epochs)
            print(
                "cgmdvae clusters vs bulk_labels: "
                + ", ".join(f"{name.upper()} {value:.3f}" for name, value in scores.items())
            )
            print(f"results written to {args.output_dir}/")
        else:
            _fit(args)
    except USER_ERRORS as error:
        message = error.args[0] if error.args else repr(error)
        print(f"scgmdvae: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
