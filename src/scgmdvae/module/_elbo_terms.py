"""Closed-form terms of the c*GMΔVÆ evidence lower bound.

Notation follows the model: ``q(z|x,c)`` and ``q(w|x,c)`` are diagonal Gaussians, ``q(y|z,c)`` is
a categorical with probabilities ``q_k`` (or the one-hot observed label), ``q(d|z,c)`` is a
Dirichlet with concentrations ``g``, ``p(z|w,y=k,c) = N(mu_k(w,c), sigma_k(w,c))``,
``p(w) = N(0, I)`` and ``p(d) = Dir(alpha)``. Every function returns one value per cell.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Dirichlet, kl_divergence


def gaussian_kl_to_components(
    q_mean: torch.Tensor, q_var: torch.Tensor, p_mean: torch.Tensor, p_var: torch.Tensor
) -> torch.Tensor:
    """KL(q(z|x) ‖ p(z|w, y=k)) for every mixture component ``k``.

    Parameters
    ----------
    q_mean, q_var
        Mean and variance of ``q(z|x,c)``, shape ``(n_cells, n_latent)``.
    p_mean, p_var
        Means and variances of the components, shape ``(n_cells, n_clusters, n_latent)``.

    Returns
    -------
    Tensor of shape ``(n_cells, n_clusters)``.
    """
    q_mean, q_var = q_mean.unsqueeze(-2), q_var.unsqueeze(-2)
    per_dim = torch.log(p_var) - torch.log(q_var) + (q_var + (q_mean - p_mean) ** 2) / p_var - 1.0
    return 0.5 * per_dim.sum(-1)


def kl_z(responsibilities: torch.Tensor, component_kl: torch.Tensor) -> torch.Tensor:
    """``kl_z`` = Σ_k q(y=k|z) · KL(q(z|x) ‖ p(z|w, y=k))."""
    return (responsibilities * component_kl).sum(-1)


def kl_w(w_mean: torch.Tensor, w_var: torch.Tensor) -> torch.Tensor:
    """``kl_w`` = KL(q(w|x) ‖ N(0, I))."""
    return 0.5 * (w_var + w_mean**2 - 1.0 - torch.log(w_var)).sum(-1)


def expected_log_weights(concentration: torch.Tensor) -> torch.Tensor:
    """E_q(d)[log d_k] = ψ(g_k) − ψ(Σ_j g_j) under ``q(d) = Dir(g)``."""
    return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))


def kl_y(responsibilities: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """``kl_y`` = Σ_k q_k (log q_k − E_q(d)[log d_k]).

    With an observed label (one-hot ``q``) this is ``−E_q(d)[log d_y]``.
    """
    entropy_part = torch.special.xlogy(responsibilities, responsibilities)
    return (entropy_part - responsibilities * expected_log_weights(concentration)).sum(-1)


def kl_d(concentration: torch.Tensor, prior_concentration: torch.Tensor) -> torch.Tensor:
    """``kl_d`` = KL(Dir(g) ‖ Dir(alpha))."""
    prior = Dirichlet(prior_concentration.expand_as(concentration), validate_args=False)
    return kl_divergence(Dirichlet(concentration, validate_args=False), prior)


def marginal_kl_y(responsibilities: torch.Tensor) -> torch.Tensor:
    """KL(q̄(y) ‖ Uniform) of the responsibilities averaged over cells (one value, not per cell).

    ``q̄(y) = mean_n q(y|z_n)``; the value is ``log K`` when every cell is in the same cluster and
    ``0`` when the clusters are used equally.
    """
    mean = responsibilities.mean(0)
    return torch.special.xlogy(mean, mean).sum() + math.log(mean.shape[-1])
