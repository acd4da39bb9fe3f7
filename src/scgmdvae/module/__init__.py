"""The c*GMΔVÆ module (the math) and its networks."""

from ._module import CGMDVAEModule

__all__ = ["CGMDVAEModule"]
