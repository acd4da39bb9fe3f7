"""c*GMΔVÆ: a conditional Gaussian-mixture VAE with a Dirichlet prior, built on scvi-tools."""

from importlib.metadata import version

import rich.pretty  # noqa: F401  (scvi's view_anndata_setup uses it without importing it)

from . import data, metrics
from .model import CGMDVAE
from .module import CGMDVAEModule

__version__ = version("scgmdvae")
__all__ = ["CGMDVAE", "CGMDVAEModule", "__version__", "data", "metrics"]
