"""Neural networks of c*GMΔVÆ.

Every network is a :class:`~scvi.nn.FCLayers` trunk, into which the condition and the other
categorical covariates are injected as one-hot columns (so that query mapping can extend them),
followed by one or more linear read-outs.
"""

from __future__ import annotations

import torch
from scvi.nn import FCLayers
from torch import nn


def soft_clip(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Smoothly bound ``x`` to ``(-bound, bound)`` with ``bound * tanh(x / bound)``."""
    return bound * torch.tanh(x / bound)


class ConditionalMLP(nn.Module):
    """Covariate-injected hidden layers followed by linear read-outs.

    Parameters
    ----------
    n_input
        Width of the input (features plus continuous covariates).
    n_outputs
        Width of each linear read-out; :meth:`forward` returns one tensor per read-out.
    n_cat_list
        Number of categories of each categorical covariate (condition first).
    n_hidden
        Width of the hidden layers.
    n_layers
        Number of hidden layers.
    dropout_rate
        Dropout rate of the hidden layers.
    use_batch_norm
        Whether hidden layers use batch normalisation.
    """

    def __init__(
        self,
        n_input: int,
        n_outputs: tuple[int, ...],
        n_cat_list: list[int],
        n_hidden: int,
        n_layers: int,
        dropout_rate: float,
        use_batch_norm: bool = True,
    ):
        super().__init__()
        self.trunk = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_cat_list=n_cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            use_batch_norm=use_batch_norm,
        )
        self.readouts = nn.ModuleList([nn.Linear(n_hidden, n_out) for n_out in n_outputs])

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> list[torch.Tensor]:
        """Return one tensor per read-out."""
        hidden = self.trunk(x, *cat_list)
        return [readout(hidden) for readout in self.readouts]


def gaussian_parameters(
    raw: torch.Tensor, mean_bound: float, log_var_bound: float, var_eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a read-out into a soft-clipped mean and a variance.

    Parameters
    ----------
    raw
        Tensor whose last dimension holds the means followed by the log-variances.
    mean_bound
        Means are soft-clipped to ``(-mean_bound, mean_bound)``.
    log_var_bound
        Log-variances are soft-clipped to ``(-log_var_bound, log_var_bound)``.
    var_eps
        Added to the variance for numerical stability.

    Returns
    -------
    The mean and the variance, each with half the last dimension of ``raw``.
    """
    mean, log_var = raw.chunk(2, dim=-1)
    mean = soft_clip(mean, mean_bound)
    var = torch.exp(soft_clip(log_var, log_var_bound)) + var_eps
    return mean, var
