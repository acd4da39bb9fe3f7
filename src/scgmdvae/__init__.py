"""c*GMΔVÆ: a conditional Gaussian-mixture VAE with a Dirichlet prior, built on scvi-tools."""

import logging as _logging

import rich.pretty as _rich_pretty  # noqa: F401  (scvi's view_anndata_setup uses it without importing it)

from . import data, metrics, pl
from ._version import __version__
from .model import CGMDVAE
from .module import CGMDVAEModule

# The package's messages go through scvi-tools' logger: shown by its handler, at the level set
# by ``scvi.settings.verbosity`` (INFO by default), like scvi-tools' own.
_logging.getLogger(__name__).parent = _logging.getLogger("scvi")

__all__ = ["CGMDVAE", "CGMDVAEModule", "__version__", "data", "metrics", "pl"]
