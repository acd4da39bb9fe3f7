"""The installed version of scgmdvae."""

from importlib.metadata import version

__version__ = version("scgmdvae")
