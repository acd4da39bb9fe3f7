"""Closed-form terms of the c*GMΔVÆ evidence lower bound.

Notation follows the model: ``q(z|x,c)`` and ``q(w|x,c)`` are diagonal Gaussians, ``q(y|z,c)`` is
a categorical with probabilities ``q_k`` (or the one-hot observed label), ``q(d|z,c)`` is a
Dirichlet with concentrations ``g`` (both networks of ``z`` are evaluated at the posterior mean
of ``z``, so they depend on ``x`` and ``c`` only), ``p(z|w,y=k,c) = N(mu_k(w,c), sigma_k(w,c))``,
``p(w) = N(0, I)`` and ``p(d) = Dir(alpha)``. The ELBO terms return one value per cell; the two
minibatch terms outside the ELBO, ``marginal_kl_y`` and ``mutual_information_y_c``, one value
per minibatch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
        Means and variances of the components, shape ``(n_cells, n_clusters, n_latent)``, or
        with leading sample dimensions (samples of ``w``), which broadcast.

    Returns
    -------
    Tensor of shape ``(..., n_cells, n_clusters)``.
    """
    q_mean, q_var = q_mean.unsqueeze(-2), q_var.unsqueeze(-2)
    per_dim = torch.log(p_var) - torch.log(q_var) + (q_var + (q_mean - p_mean) ** 2) / p_var - 1.0
    return 0.5 * per_dim.sum(-1)


def kl_z(responsibilities: torch.Tensor, component_kl: torch.Tensor) -> torch.Tensor:
    """``kl_z`` = Σ_k q(y=k|x,c) · KL(q(z|x) ‖ p(z|w, y=k)).

    Exact in ``z`` only because ``q(y|x,c)`` does not depend on the sample of ``z``: the module
    evaluates its cluster network at the posterior mean of ``z``.
    """
    return (responsibilities * component_kl).sum(-1)


def kl_w(w_mean: torch.Tensor, w_var: torch.Tensor) -> torch.Tensor:
    """``kl_w`` = KL(q(w|x) ‖ N(0, I))."""
    return 0.5 * (w_var + w_mean**2 - 1.0 - torch.log(w_var)).sum(-1)


def expected_log_weights(concentration: torch.Tensor) -> torch.Tensor:
    """E_q(d)[log d_k] = ψ(g_k) − ψ(Σ_j g_j) under ``q(d) = Dir(g)``."""
    return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))


def kl_y(
    responsibilities: torch.Tensor,
    log_responsibilities: torch.Tensor,
    expected_log_weights: torch.Tensor,
) -> torch.Tensor:
    """``kl_y`` = Σ_k q_k (log q_k − E_q(d)[log d_k]).

    Parameters
    ----------
    responsibilities
        ``q_k``: ``q(y|x,c)``, or the one-hot observed label.
    log_responsibilities
        ``log q_k`` from ``log_softmax`` (never ``log`` of an underflowed ``0``, whose gradient
        is ``0/0``); where ``q_k = 0`` exactly, as off the label of a one-hot row, any finite
        value.
    expected_log_weights
        ``E_q(d)[log d_k]`` (:func:`expected_log_weights`), or ``log(1/K)`` for fixed uniform
        weights, where ``kl_y = KL(q(y) ‖ Uniform)``.

    With an observed label this is ``−E_q(d)[log d_y]``.
    """
    return (responsibilities * (log_responsibilities - expected_log_weights)).sum(-1)


def kl_d(concentration: torch.Tensor, prior_concentration: torch.Tensor) -> torch.Tensor:
    """``kl_d`` = KL(Dir(g) ‖ Dir(alpha))."""
    prior = Dirichlet(prior_concentration.expand_as(concentration), validate_args=False)
    return kl_divergence(Dirichlet(concentration, validate_args=False), prior)


def log_mean_responsibilities(log_responsibilities: torch.Tensor) -> torch.Tensor:
    """``log q̄(y)`` with ``q̄(y) = mean_n q(y|x_n)``, from log-probabilities (no underflow)."""
    return torch.logsumexp(log_responsibilities, 0) - math.log(log_responsibilities.shape[0])


def marginal_kl_y(log_responsibilities: torch.Tensor) -> torch.Tensor:
    """KL(q̄(y) ‖ Uniform) of the responsibilities averaged over cells (one value, not per cell).

    ``q̄(y) = mean_n q(y|x_n)``; the value is ``log K`` when every cell is in the same cluster and
    ``0`` when the clusters are used equally. Takes ``log q(y|x_n)`` (from ``log_softmax``) so
    that a component no cell uses gives a finite gradient.
    """
    log_mean = log_mean_responsibilities(log_responsibilities)
    return (log_mean.exp() * log_mean).sum() + math.log(log_mean.shape[-1])


def mutual_information_y_c(
    log_responsibilities: torch.Tensor, condition: torch.Tensor
) -> torch.Tensor:
    """I(y; c) of the minibatch: how much cluster usage depends on the condition (one value).

    The joint of cluster and condition is ``(1/N) Σ_n q(y|x_n,c_n) · onehot(c_n)``, so
    ``I(y; c) = Σ_c p(c) KL(q̄_c(y) ‖ q̄(y))`` with ``q̄_c`` the mean of ``q(y|x,c)`` over the
    cells of condition ``c`` and ``q̄`` over all cells. It is ``0`` when every condition uses
    the clusters in the same proportions and at most the log of the number of conditions,
    reached when no cluster holds cells of two conditions. Computed from ``log q(y|x_n,c_n)``
    in log space, so that it stays finite, with a finite gradient, when probabilities
    underflow.
    """
    present = torch.unique(condition.long().view(-1), return_inverse=True)[1]
    member = F.one_hot(present).T.bool()
    log_member = torch.zeros_like(member, dtype=log_responsibilities.dtype)
    log_member = log_member.masked_fill(~member, -math.inf)
    counts = member.sum(-1, keepdim=True).to(log_responsibilities.dtype)
    log_per_condition = (
        torch.logsumexp(log_responsibilities.unsqueeze(0) + log_member.unsqueeze(-1), dim=1)
        - counts.log()
    )
    log_marginal = log_mean_responsibilities(log_responsibilities)
    kl = (log_per_condition.exp() * (log_per_condition - log_marginal)).sum(-1)
    return (counts.squeeze(-1) / condition.numel() * kl).sum()
