"""Sphinx configuration of the scgmdvae documentation."""

import os
import sys
from datetime import date
from importlib.metadata import version as package_version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "scgmdvae"
author = "scgmdvae developers"
copyright = f"{date.today().year}, {author}"
release = package_version("scgmdvae")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "sphinxcontrib.bibtex",
    "benchmark_tables",
]

autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
typehints_defaults = "braces"
always_document_param_types = False

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_merge_streams = True

# rst first: autosummary writes its stub pages with the first suffix, and they are rst.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "generated/benchmarks",
    "**.ipynb_checkpoints",
    "Thumbs.db",
    ".DS_Store",
]

# Inventories need the network; SCGMDVAE_DOCS_OFFLINE=1 (set by .ci/run) builds without them.
intersphinx_mapping = (
    {}
    if os.environ.get("SCGMDVAE_DOCS_OFFLINE")
    else {
        "python": ("https://docs.python.org/3", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "pandas": ("https://pandas.pydata.org/docs/", None),
    }
)

html_theme = "sphinx_book_theme"
html_title = "scgmdvae"
html_theme_options = {
    "repository_url": "https://github.com/scgmdvae/scgmdvae",
    "use_repository_button": True,
    "navigation_with_keys": False,
}
