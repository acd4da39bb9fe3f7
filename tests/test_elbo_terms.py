"""The closed-form ELBO terms agree with Monte-Carlo estimates of their definitions."""

import math

import torch
from torch.distributions import Categorical, Dirichlet, Normal

from scgmdvae.module import _elbo_terms as terms

N_SAMPLES = 200_000


def test_kl_y_matches_monte_carlo():
    torch.manual_seed(0)
    q = torch.softmax(torch.randn(3, 4), -1)
    g = torch.rand(3, 4) * 3 + 0.2
    log_d = torch.log(Dirichlet(g).sample((N_SAMPLES,)).clamp(min=1e-30))
    monte_carlo = (q * (torch.log(q) - log_d)).sum(-1).mean(0)
    closed_form = terms.kl_y(q, torch.log(q), terms.expected_log_weights(g))
    torch.testing.assert_close(closed_form, monte_carlo, atol=2e-2, rtol=1e-2)


def test_kl_y_with_observed_label_is_minus_expected_log_weight():
    g = torch.tensor([[0.5, 2.0, 1.5]])
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])
    expected = -(torch.digamma(g[0, 1]) - torch.digamma(g.sum()))
    closed_form = terms.kl_y(one_hot, torch.zeros_like(g), terms.expected_log_weights(g))
    torch.testing.assert_close(closed_form, expected.reshape(1))


def test_kl_d_matches_monte_carlo():
    torch.manual_seed(0)
    g = torch.rand(3, 5) * 3 + 0.3
    alpha = torch.full((5,), 0.7)
    q, p = Dirichlet(g), Dirichlet(alpha.expand_as(g))
    d = q.sample((N_SAMPLES,)).clamp(min=1e-12)
    d = d / d.sum(-1, keepdim=True)
    monte_carlo = (q.log_prob(d) - p.log_prob(d)).mean(0)
    torch.testing.assert_close(terms.kl_d(g, alpha), monte_carlo, atol=3e-2, rtol=2e-2)


def test_kl_w_matches_monte_carlo():
    torch.manual_seed(0)
    mean, var = torch.randn(4, 3), torch.rand(4, 3) + 0.1
    q = Normal(mean, var.sqrt())
    w = q.sample((N_SAMPLES,))
    monte_carlo = (q.log_prob(w) - Normal(0.0, 1.0).log_prob(w)).sum(-1).mean(0)
    torch.testing.assert_close(terms.kl_w(mean, var), monte_carlo, atol=2e-2, rtol=1e-2)


def test_kl_z_matches_monte_carlo_weighted_by_responsibilities():
    torch.manual_seed(0)
    n_cells, n_clusters, n_latent = 3, 4, 2
    q_mean, q_var = torch.randn(n_cells, n_latent), torch.rand(n_cells, n_latent) + 0.2
    p_mean = 2 * torch.randn(n_cells, n_clusters, n_latent)
    p_var = torch.rand(n_cells, n_clusters, n_latent) + 0.3
    q_y = torch.softmax(torch.randn(n_cells, n_clusters), -1)

    closed_form = terms.kl_z(q_y, terms.gaussian_kl_to_components(q_mean, q_var, p_mean, p_var))

    q_z = Normal(q_mean, q_var.sqrt())
    z = q_z.sample((N_SAMPLES,))
    y = Categorical(q_y).sample((N_SAMPLES,))
    chosen = torch.arange(n_cells)
    p_z = Normal(p_mean[chosen, y], p_var[chosen, y].sqrt())
    monte_carlo = (q_z.log_prob(z) - p_z.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(closed_form, monte_carlo, atol=5e-2, rtol=2e-2)


def test_marginal_kl_y_is_the_marginal_part_of_the_y_term():
    torch.manual_seed(0)
    q_y = torch.softmax(3 * torch.randn(50, 5), -1)
    q_bar = q_y.mean(0)
    per_cell_to_uniform = (q_y * torch.log(q_y * 5)).sum(-1).mean()
    mutual_information = (q_y * torch.log(q_y / q_bar)).sum(-1).mean()
    marginal = terms.marginal_kl_y(torch.log(q_y))
    torch.testing.assert_close(per_cell_to_uniform, mutual_information + marginal)
    one_cluster = torch.full((10, 5), -1e4)
    one_cluster[:, 0] = 0.0
    torch.testing.assert_close(terms.marginal_kl_y(one_cluster), torch.tensor(math.log(5)))
    equal_use = torch.log_softmax(1e4 * torch.eye(5), -1)
    torch.testing.assert_close(terms.marginal_kl_y(equal_use), torch.tensor(0.0))


def test_mutual_information_y_c_matches_monte_carlo():
    torch.manual_seed(0)
    n_cells, n_conditions, n_clusters = 60, 3, 4
    q_y = torch.softmax(2 * torch.randn(n_cells, n_clusters), -1)
    condition = torch.randint(0, n_conditions, (n_cells, 1))
    y = Categorical(q_y).sample((N_SAMPLES // n_cells,))
    joint = torch.zeros(n_conditions, n_clusters)
    pairs = (condition.view(-1).expand_as(y).reshape(-1), y.reshape(-1))
    joint.index_put_(pairs, torch.ones(y.numel()), accumulate=True)
    joint /= joint.sum()
    independent = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    monte_carlo = torch.special.xlogy(joint, joint / independent).sum()
    closed_form = terms.mutual_information_y_c(torch.log(q_y), condition)
    torch.testing.assert_close(closed_form, monte_carlo, atol=5e-3, rtol=2e-2)


def test_mutual_information_y_c_is_zero_for_shared_and_log_n_for_separate_clusters():
    torch.manual_seed(0)
    log_q_y = torch.log_softmax(torch.randn(10, 4), -1)
    condition = torch.tensor([0] * 10 + [1] * 10)
    shared = terms.mutual_information_y_c(torch.cat([log_q_y, log_q_y]), condition)
    torch.testing.assert_close(shared, torch.tensor(0.0))
    separate = torch.log_softmax(1e4 * torch.nn.functional.one_hot(condition, 4).float(), -1)
    torch.testing.assert_close(
        terms.mutual_information_y_c(separate, condition), torch.tensor(math.log(2))
    )
    one_condition = terms.mutual_information_y_c(log_q_y, torch.zeros(10))
    torch.testing.assert_close(one_condition, torch.tensor(0.0))


def test_entropy_terms_have_finite_gradients_when_a_probability_underflows():
    """logits [0, -200, 1]: the middle probability is exactly 0 in float32."""
    logits = torch.tensor([[0.0, -200.0, 1.0], [2.0, -300.0, 0.0]], requires_grad=True)
    log_q = torch.log_softmax(logits, -1)
    assert (log_q.exp() == 0).any()
    g = torch.tensor([[1.0, 0.5, 2.0], [0.3, 0.3, 3.0]])
    condition = torch.tensor([0, 1])
    total = (
        terms.kl_y(log_q.exp(), log_q, terms.expected_log_weights(g)).sum()
        + terms.marginal_kl_y(log_q)
        + terms.mutual_information_y_c(log_q, condition)
    )
    total.backward()
    assert torch.isfinite(logits.grad).all()
