"""AnnData-facing models."""

from ._model import CGMDVAE

__all__ = ["CGMDVAE"]
