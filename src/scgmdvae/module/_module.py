"""The c*GMΔVÆ module: networks, generative process and the negative ELBO."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, Poisson, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import DecoderSCVI
from torch import nn
from torch.distributions import Bernoulli, Distribution, Normal

from . import _elbo_terms as terms
from ._networks import ConditionalMLP, gaussian_parameters

COUNT_LIKELIHOODS = ("nb", "zinb", "poisson")
GeneLikelihood = Literal["nb", "zinb", "poisson", "normal", "bernoulli"]
MixtureWeights = Literal["global_dirichlet", "dirichlet", "uniform"]
COMPONENT_AXES = {
    "component_in_use": 1,
    "prior_concentration": 1,
    "weight_proportions": 1,
    "cluster_head.readouts.0.": 1,
    "dirichlet_head.readouts.0.": 1,
    "prior_network.readouts.0.": 2,
}
"""Tensors indexed by mixture component, by name prefix, with the number of ``K``-blocks of their
first axis (the prior network's read-out holds means and log-variances: ``2 × K × n_latent``)."""

SWITCHED_OFF_LOGIT = -1e4
"""Logit of ``q(y|z,c)`` for a switched-off component: its probability is exactly ``0`` in
float32 and bfloat16, while ``log q`` stays finite (see :func:`~._elbo_terms.kl_y`)."""


def raise_if_non_finite(terms: dict[str, torch.Tensor]) -> None:
    """Stop training with a ``FloatingPointError`` naming the loss terms that are NaN or Inf."""
    finite = torch.stack([torch.isfinite(value).all() for value in terms.values()])
    if not bool(finite.all()):
        names = [name for name, ok in zip(terms, finite.tolist(), strict=True) if not ok]
        raise FloatingPointError(
            f"The loss term(s) {', '.join(names)} became NaN or Inf; training was stopped "
            "before the model was written anywhere. Lower the learning rate (`lr`), check the "
            "data for extreme values, or lengthen the KL warm-up (`n_epochs_kl_warmup`)."
        )


class CGMDVAEModule(BaseModuleClass):
    """Conditional Gaussian-mixture VAE with a Dirichlet prior on the mixture weights.

    Generative model ``p(x,y,z,w,d|c) = p(x|z,c) p(z|w,y,c) p(y|d) p(d) p(w)`` with
    ``p(w) = N(0, I)``, ``p(d) = Dir(alpha)``, ``p(y|d) = Cat(d)`` and
    ``p(z|w,y=k,c) = N(mu_k(w,c), sigma_k(w,c))``, or ``p(z|w,y=k) = N(mu_k(w), sigma_k(w))``
    with ``condition_in_prior=False``. Inference networks ``q(z|x,c)``, ``q(w|x,c)``
    (one trunk, two Gaussian heads), ``q(y|z,c)`` (categorical) and ``q(d|z,c)`` (Dirichlet).

    Parameters
    ----------
    n_input
        Number of features (genes, pixels).
    n_clusters
        Number of mixture components ``K``.
    n_batch
        Number of categories of the condition (``0`` or ``1``: no condition).
    n_cats_per_cov
        Number of categories of each further categorical covariate.
    n_continuous_cov
        Number of continuous covariates; they are concatenated to every network's input.
    n_labels
        Number of known label categories; label ``k`` is mixture component ``k``. ``0`` means
        unsupervised. Cells whose label code is ``>= n_labels`` are unlabelled.
    n_latent
        Dimension of ``z``.
    n_latent_w
        Dimension of ``w``.
    n_hidden
        Width of hidden layers.
    n_layers
        Number of hidden layers of every network.
    dropout_rate
        Dropout rate of hidden layers.
    dirichlet_alpha
        Concentration of the symmetric Dirichlet prior ``p(d)``; ``< 1`` favours few clusters.
    mixture_weights
        How the mixture weights ``d`` enter:

        - ``"global_dirichlet"``: one ``d`` for the whole data set, with
          ``q(d) = Dir(gamma)``, ``gamma_k = alpha_k + n_cells · pi_k`` and ``pi`` the
          running mean of ``q(y|z,c)`` over the training minibatches (the closed-form
          coordinate update of ``q(d)`` of a variational Bayesian mixture, as in scikit-learn's
          ``BayesianGaussianMixture``, taken as a stochastic step of about one epoch's memory,
          as in stochastic variational inference). ``E[log d_k]`` is then close to
          ``log pi_k`` for a component in use and far below it for an empty one, so that
          components the data do not need are switched off.
        - ``"dirichlet"``: the thesis' per-cell ``q(d|z,c)``, amortised by a network. Each
          cell has its own ``d``, so the prior cannot switch a component off for all cells.
        - ``"uniform"``: fixed uniform weights as in the GMVAE of Dilokthanakul et al.; then
          ``kl_d`` vanishes and ``kl_y = KL(q(y|z) ‖ Uniform)``.
    n_cells
        Number of cells the weights are shared by (``"global_dirichlet"``; the size of the
        training data). ``kl_d`` of the global ``d`` is divided among them.
    gene_likelihood
        ``"nb"``, ``"zinb"``, ``"poisson"`` (counts, with library size), ``"normal"``
        (continuous data) or ``"bernoulli"`` (data in ``[0, 1]``).
    dispersion
        ``"gene"`` (one dispersion per feature) or ``"gene-cell"``; used by ``"nb"``/``"zinb"``.
    use_size_factor_key
        Use the registered size factor instead of the observed library size.
    log_variational
        Encode ``log1p(x)`` instead of ``x``.
    kl_z_weight, kl_w_weight, kl_y_weight, kl_d_weight
        Multipliers of each KL term (``1`` gives the ELBO).
    classification_ratio
        Weight of the classification term ``−log q(y|z)`` on labelled cells.
    marginal_kl_y_weight
        Weight of an extra term ``KL(q̄(y) ‖ Uniform)``, where ``q̄(y)`` is ``q(y|z,c)``
        averaged over the minibatch. The ELBO's y-term, averaged over cells, is the mutual
        information between cells and clusters plus this marginal KL; weighting the marginal
        part more keeps every component in use, at the price of pushing towards equal cluster
        sizes. ``0`` (default) is the ELBO.
    mi_y_c_weight
        Weight of an extra term ``I(y; c)``, the mutual information between the cluster
        ``q(y|z,c)`` and the condition over the minibatch: above 0 it penalises clusters that
        hold mostly one condition. It assumes that the conditions share their cell types and
        proportions roughly (batches, technologies, a treatment that changes states but not
        types), and works against clusters that exist in one condition only. ``0`` (default)
        is the ELBO.
    condition_in_prior
        Whether the condition and the other covariates enter the prior network, as in the
        thesis' ``p(z|w,y,c)`` (default): a cluster may then sit elsewhere in each condition,
        so nothing makes ``z`` forget the condition, and neighbourhoods in ``z`` separate the
        conditions. ``False`` gives every cluster the same prior in every condition,
        ``p(z|w,y)``: the KL term then pulls the cells of one cluster to the same place in ``z``
        whatever their condition, and the decoder, which reads the condition, carries the
        condition's effect on expression (as in scVI, whose prior has no condition either).
    mean_bound, log_var_bound
        Soft-clipping bounds of Gaussian means and log-variances.
    concentration_floor
        Lower bound added to the Dirichlet concentrations of ``q(d|z,c)``.
    """

    def __init__(
        self,
        n_input: int,
        n_clusters: int,
        n_batch: int = 0,
        n_cats_per_cov: list[int] | None = None,
        n_continuous_cov: int = 0,
        n_labels: int = 0,
        n_latent: int = 10,
        n_latent_w: int = 5,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dirichlet_alpha: float = 1.0,
        mixture_weights: MixtureWeights = "dirichlet",
        n_cells: int = 1,
        gene_likelihood: GeneLikelihood = "nb",
        dispersion: Literal["gene", "gene-cell"] = "gene",
        use_size_factor_key: bool = False,
        log_variational: bool = True,
        kl_z_weight: float = 1.0,
        kl_w_weight: float = 1.0,
        kl_y_weight: float = 1.0,
        kl_d_weight: float = 1.0,
        classification_ratio: float = 50.0,
        marginal_kl_y_weight: float = 0.0,
        mi_y_c_weight: float = 0.0,
        condition_in_prior: bool = True,
        mean_bound: float = 10.0,
        log_var_bound: float = 8.0,
        concentration_floor: float = 1e-2,
    ):
        super().__init__()
        negative = {
            name: value
            for name, value in {
                "kl_z_weight": kl_z_weight,
                "kl_w_weight": kl_w_weight,
                "kl_y_weight": kl_y_weight,
                "kl_d_weight": kl_d_weight,
                "classification_ratio": classification_ratio,
                "marginal_kl_y_weight": marginal_kl_y_weight,
                "mi_y_c_weight": mi_y_c_weight,
            }.items()
            if value < 0
        }
        if negative:
            raise ValueError(f"Loss weights must not be negative: {negative}.")
        self.n_input = n_input
        self.n_clusters = n_clusters
        self.n_batch = n_batch
        self.n_labels = n_labels
        self.n_latent = n_latent
        self.n_latent_w = n_latent_w
        self.mixture_weights = mixture_weights
        self.gene_likelihood = gene_likelihood
        self.dispersion = dispersion
        self.use_size_factor_key = use_size_factor_key
        self.log_variational = log_variational
        self.term_weights = {
            "kl_z": kl_z_weight,
            "kl_w": kl_w_weight,
            "kl_y": kl_y_weight,
            "kl_d": kl_d_weight,
        }
        self.classification_ratio = classification_ratio
        self.marginal_kl_y_weight = marginal_kl_y_weight
        self.mi_y_c_weight = mi_y_c_weight
        self.condition_in_prior = condition_in_prior
        self.mean_bound = mean_bound
        self.log_var_bound = log_var_bound
        self.concentration_floor = concentration_floor
        self.update_global_weights = True
        self.register_buffer("n_cells", torch.tensor(float(n_cells)))
        self.register_buffer("prior_concentration", torch.full((n_clusters,), dirichlet_alpha))
        self.register_buffer("weight_proportions", torch.full((n_clusters,), 1.0 / n_clusters))
        self.register_buffer("component_in_use", torch.ones(n_clusters, dtype=torch.bool))

        n_cat_list = [n_batch, *(n_cats_per_cov or [])]
        network = {
            "n_cat_list": n_cat_list,
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "dropout_rate": dropout_rate,
        }
        self.encoder = ConditionalMLP(
            n_input + n_continuous_cov, (2 * n_latent, 2 * n_latent_w), **network
        )
        self.cluster_head = ConditionalMLP(n_latent + n_continuous_cov, (n_clusters,), **network)
        self.dirichlet_head = ConditionalMLP(n_latent + n_continuous_cov, (n_clusters,), **network)
        self.prior_network = ConditionalMLP(
            n_latent_w + (n_continuous_cov if condition_in_prior else 0),
            (2 * n_clusters * n_latent,),
            **{**network, "n_cat_list": n_cat_list if condition_in_prior else []},
        )
        if gene_likelihood in COUNT_LIKELIHOODS:
            self.decoder = DecoderSCVI(
                n_latent + n_continuous_cov,
                n_input,
                n_cat_list=n_cat_list,
                n_layers=n_layers,
                n_hidden=n_hidden,
                scale_activation="softplus" if use_size_factor_key else "softmax",
            )
            self.px_r = nn.Parameter(torch.randn(n_input))
        else:
            self.decoder = ConditionalMLP(n_latent + n_continuous_cov, (n_input,), **network)
            self.px_log_scale = nn.Parameter(torch.zeros(n_input))
        self._spread_component_means()

    def _spread_component_means(self) -> None:
        """Start the K component means apart, so that components do not begin identical."""
        readout = self.prior_network.readouts[0]
        mean_bias = readout.bias.data.view(2, self.n_clusters, self.n_latent)[0]
        mean_bias.normal_(0.0, 1.0)

    def settings(self) -> dict[str, int | float | str | bool]:
        """Return the number of components, the mixture weights and every loss weight in use."""
        return {
            "n_clusters": self.n_clusters,
            "mixture_weights": self.mixture_weights,
            **{f"{name}_weight": weight for name, weight in self.term_weights.items()},
            "classification_ratio": self.classification_ratio,
            "marginal_kl_y_weight": self.marginal_kl_y_weight,
            "mi_y_c_weight": self.mi_y_c_weight,
            "condition_in_prior": self.condition_in_prior,
        }

    def is_component_parameter(self, name: str) -> bool:
        """Whether the state-dict entry ``name`` is indexed by mixture component."""
        return name.startswith(tuple(COMPONENT_AXES))

    @torch.no_grad()
    def permute_components(self, order: Sequence[int]) -> None:
        """Relabel the mixture components in place: new component ``k`` is old ``order[k]``.

        Every component-indexed tensor (cluster and Dirichlet read-outs, prior network
        read-out, prior concentrations, global weights, components in use) is permuted, so the
        model is the same mixture with its components renumbered.
        """
        index = torch.as_tensor(np.asarray(order), dtype=torch.long)
        if sorted(index.tolist()) != list(range(self.n_clusters)):
            raise ValueError(f"order must be a permutation of 0 … {self.n_clusters - 1}.")
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            blocks = self._component_blocks(name)
            if blocks:
                grouped = tensor.reshape(blocks, self.n_clusters, -1)
                tensor.copy_(grouped[:, index.to(tensor.device)].reshape(tensor.shape))

    @torch.no_grad()
    def keep_components(self, in_use: Sequence[int]) -> None:
        """Keep components ``in_use`` and switch the others off, until called again.

        A switched-off component has ``q(y=k|z,c) = 0`` for every cell (a restriction of the
        variational family, so the ELBO stays a bound): no cell can return to it, while
        training may still empty the components in use. Its prior and its Dirichlet
        concentration stay in the model, so the mixture keeps its ``K`` components and their
        numbering. The state is a buffer: saved with the model, permuted by
        :meth:`permute_components`, and kept for the reference's components by
        :meth:`with_new_components` (new components are in use).
        """
        index = torch.as_tensor(np.asarray(in_use), dtype=torch.long)
        if index.numel() == 0 or not ((0 <= index) & (index < self.n_clusters)).all():
            raise ValueError(
                f"in_use must name at least one component between 0 and {self.n_clusters - 1}."
            )
        self.component_in_use.zero_()
        self.component_in_use[index.to(self.component_in_use.device)] = True

    def _component_blocks(self, name: str) -> int:
        """Return the number of ``K``-blocks of the first axis of tensor ``name`` (0: none)."""
        return next((n for prefix, n in COMPONENT_AXES.items() if name.startswith(prefix)), 0)

    @torch.no_grad()
    def with_new_components(
        self, reference_state: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Map the state of a module with fewer components onto this one.

        The reference's components keep their values as this module's first components; the
        new ones take this module's own initial values (the prior concentration ``alpha``, the
        read-outs' random initialisation, new means spread apart, in use). The global weight
        proportions are renormalised to sum to 1. With as many components, the state is
        returned as it is.

        Parameters
        ----------
        reference_state
            State dict of the reference module (same architecture, fewer components).

        Returns
        -------
        The state dict to load, and for each component-indexed parameter a mask (its shape) of
        the new components' entries, for training only those.
        """
        n_reference = reference_state["prior_concentration"].shape[0]
        state, new_entries = dict(reference_state), {}
        if n_reference == self.n_clusters:
            return state, new_entries
        own = self.state_dict()
        parameters = dict(self.named_parameters())
        for name, value in reference_state.items():
            blocks = self._component_blocks(name)
            if not blocks:
                continue
            grouped = own[name].clone().reshape(blocks, self.n_clusters, -1)
            grouped[:, :n_reference] = value.reshape(blocks, n_reference, -1)
            state[name] = grouped.reshape(own[name].shape)
            if name in parameters:
                mask = torch.zeros_like(grouped, dtype=torch.bool)
                mask[:, n_reference:] = True
                new_entries[name] = mask.reshape(own[name].shape)
        if "weight_proportions" in state:  # saves from before the global weights lack it
            proportions = state["weight_proportions"]
            state["weight_proportions"] = proportions / proportions.sum()
        return state, new_entries

    def _covariates(
        self, batch_index: torch.Tensor, cat_covs: torch.Tensor | None
    ) -> list[torch.Tensor]:
        extra = list(torch.split(cat_covs, 1, dim=1)) if cat_covs is not None else []
        return [batch_index, *extra]

    @staticmethod
    def _with_continuous(x: torch.Tensor, cont_covs: torch.Tensor | None) -> torch.Tensor:
        if cont_covs is None:
            return x
        return torch.cat([x, cont_covs.expand(*x.shape[:-1], -1)], dim=-1)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict:
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
        }

    def _get_generative_input(self, tensors: dict[str, torch.Tensor], inference_outputs: dict):
        size_factor = tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY)
        return {
            "z": inference_outputs["z"],
            "w": inference_outputs["w"],
            "library": (
                torch.log(size_factor) if size_factor is not None else inference_outputs["library"]
            ),
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
        }

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        n_samples: int = 1,
    ) -> dict[str, torch.Tensor | Distribution]:
        """Encode ``x`` into ``q(z|x,c)``, ``q(w|x,c)``, ``q(y|z,c)`` and ``q(d|z,c)``.

        ``z`` and ``w`` are reparameterised samples. The cluster logits and the Dirichlet
        concentrations are computed at the posterior mean of ``z``, not at the sample: then
        ``q(y)`` and ``q(d)`` depend on ``x`` and ``c`` only, the z-term
        ``Σ_k q(y=k) KL(q(z|x) ‖ p(z|w,k))`` is exact in ``z``, and training classifies cells
        exactly as prediction does. Cells with zero counts get a library size of one. With
        ``n_samples > 1``, samples and library sizes get a leading dimension of that size (as
        in scVI, for :class:`~scvi.model.base.RNASeqMixin`); the cluster logits and the
        concentrations, computed at the mean, do not.
        """
        covariates = self._covariates(batch_index, cat_covs)
        library = torch.log(x.sum(dim=1, keepdim=True).clamp(min=1.0))
        encoder_input = torch.log1p(x) if self.log_variational else x
        z_raw, w_raw = self.encoder(self._with_continuous(encoder_input, cont_covs), *covariates)
        qz = Normal(*self._gaussian(z_raw, sd=True))
        qw = Normal(*self._gaussian(w_raw, sd=True))
        sample_shape = torch.Size([n_samples]) if n_samples > 1 else torch.Size()
        z, w = qz.rsample(sample_shape), qw.rsample(sample_shape)
        library = library.expand(*sample_shape, *library.shape)
        return {
            "z": z,
            "qz": qz,
            "w": w,
            "qw": qw,
            "library": library,
            "qy_logits": self.cluster_logits(qz.loc, batch_index, cat_covs, cont_covs),
            "qd_concentration": self.dirichlet_concentration(
                qz.loc, batch_index, cat_covs, cont_covs
            ),
        }

    def _gaussian(self, raw: torch.Tensor, sd: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = gaussian_parameters(raw, self.mean_bound, self.log_var_bound)
        return mean, var.sqrt() if sd else var

    def cluster_logits(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of ``q(y|z,c)``, shape ``(n_cells, n_clusters)``.

        Switched-off components (:meth:`keep_components`) get :data:`SWITCHED_OFF_LOGIT`.
        """
        covariates = self._covariates(batch_index, cat_covs)
        logits = self.cluster_head(self._with_continuous(z, cont_covs), *covariates)[0]
        return logits.masked_fill(~self.component_in_use, SWITCHED_OFF_LOGIT)

    def dirichlet_concentration(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Concentrations ``g`` of ``q(d|z,c)``: softplus of the read-out plus a floor."""
        covariates = self._covariates(batch_index, cat_covs)
        raw = self.dirichlet_head(self._with_continuous(z, cont_covs), *covariates)[0]
        return F.softplus(raw) + self.concentration_floor

    def component_parameters(
        self,
        w: torch.Tensor,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and variances of ``p(z|w,y=k,c)``, each ``(n_cells, n_clusters, n_latent)``.

        The covariates are ignored unless ``condition_in_prior``.
        """
        if self.condition_in_prior:
            covariates = self._covariates(batch_index, cat_covs)
            raw = self.prior_network(self._with_continuous(w, cont_covs), *covariates)[0]
        else:
            raw = self.prior_network(w)[0]
        raw = raw.unflatten(-1, (2, self.n_clusters, self.n_latent))
        return self._gaussian(torch.cat([raw[..., 0, :, :], raw[..., 1, :, :]], dim=-1))

    def observation_distribution(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> Distribution:
        """Return the likelihood ``p(x|z,c)`` chosen by ``gene_likelihood``.

        Its parameters are float32 whatever the training precision, so that the
        reconstruction term is not computed in bfloat16.
        """
        covariates = self._covariates(batch_index, cat_covs)
        decoder_input = self._with_continuous(z, cont_covs)
        if self.gene_likelihood == "normal":
            loc = self.decoder(decoder_input, *covariates)[0].float()
            return Normal(loc, torch.exp(self.px_log_scale).clamp(min=1e-4), validate_args=False)
        if self.gene_likelihood == "bernoulli":
            logits = self.decoder(decoder_input, *covariates)[0].float()
            return Bernoulli(logits=logits, validate_args=False)
        px_scale, px_r, px_rate, px_dropout = (
            None if value is None else value.float()
            for value in self.decoder(self.dispersion, decoder_input, library, *covariates)
        )
        theta = torch.exp(self.px_r) if px_r is None else torch.exp(px_r)
        if self.gene_likelihood == "zinb":
            return ZeroInflatedNegativeBinomial(
                mu=px_rate, theta=theta, zi_logits=px_dropout, scale=px_scale
            )
        if self.gene_likelihood == "nb":
            return NegativeBinomial(mu=px_rate, theta=theta, scale=px_scale)
        return Poisson(px_rate, scale=px_scale)

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        w: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        transform_batch: int | None = None,
    ) -> dict[str, torch.Tensor | Distribution]:
        """Evaluate ``p(z|w,y,c)`` for every component and ``p(x|z,c)``.

        ``transform_batch``, a condition code, replaces every cell's condition (as in scVI).
        """
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, transform_batch)
        pz_mean, pz_var = self.component_parameters(w, batch_index, cat_covs, cont_covs)
        return {
            "pz_mean": pz_mean,
            "pz_var": pz_var,
            "px": self.observation_distribution(z, library, batch_index, cat_covs, cont_covs),
        }

    def labelled_mask(
        self, labels: torch.Tensor, n_observed_labels: int | None = None
    ) -> torch.Tensor:
        """Boolean mask of cells whose label is observed.

        A label code is observed when it is below ``n_observed_labels``, by default the
        module's ``n_labels``; guided training passes the number of guide clusters instead.
        """
        n_observed = self.n_labels if n_observed_labels is None else n_observed_labels
        return labels.squeeze(-1) < n_observed

    def responsibilities(
        self,
        qy_logits: torch.Tensor,
        labels: torch.Tensor,
        n_observed_labels: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(y|z,c)`` and its log, with the one-hot observed label for labelled cells.

        Returns the probabilities and ``log_softmax`` of the logits; in labelled rows the
        probabilities are one-hot and the log-probabilities ``0``, so that ``q · log q``
        vanishes there (see :func:`~scgmdvae.module._elbo_terms.kl_y`).
        """
        log_probs = F.log_softmax(qy_logits, dim=-1)
        probs = log_probs.exp()
        mask = self.labelled_mask(labels, n_observed_labels)
        if not mask.any():
            return probs, log_probs
        codes = labels.squeeze(-1).long().clamp(max=self.n_clusters - 1)
        one_hot = F.one_hot(codes, self.n_clusters).to(probs.dtype)
        mask = mask.unsqueeze(-1)
        return torch.where(mask, one_hot, probs), log_probs.masked_fill(mask, 0.0)

    def global_concentration(self) -> torch.Tensor:
        """Return ``gamma = alpha + n_cells · pi``, the concentrations of the global ``q(d)``."""
        return self.prior_concentration + self.n_cells * self.weight_proportions

    @torch.no_grad()
    def update_weight_proportions(self, responsibilities: torch.Tensor) -> None:
        """Step ``pi`` towards the minibatch's mean responsibilities, by ``batch / n_cells``.

        The step size makes ``pi`` a running mean over about one epoch. :meth:`loss` calls it
        on every training minibatch with ``"global_dirichlet"`` weights, after the loss terms
        were found finite, unless ``update_global_weights`` is ``False`` (a query mapped onto a
        frozen reference). Under DDP every process steps its own copy and the copies are
        synchronised from the first process, so ``pi`` follows that process's minibatches.
        """
        step = (responsibilities.shape[0] / self.n_cells).clamp(max=1.0)
        batch_mean = responsibilities.float().mean(0)
        self.weight_proportions.mul_(1.0 - step).add_(step * batch_mean)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Load modules saved before the global weights or the switched-off components existed.

        Their missing buffers keep this module's values (every component in use).
        """
        for name in ("weight_proportions", "n_cells", "component_in_use"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _learns_global_weights(self) -> bool:
        """Whether this forward pass is a training step that updates the global weights."""
        return (
            self.mixture_weights == "global_dirichlet"
            and self.update_global_weights
            and self.training
            and torch.is_grad_enabled()
        )

    def expected_log_weights(self, concentration: torch.Tensor) -> torch.Tensor:
        """``E_q(d)[log d_k]`` under ``q(d)``, or ``log(1/K)`` for uniform weights."""
        if self.mixture_weights == "dirichlet":
            return terms.expected_log_weights(concentration)
        if self.mixture_weights == "global_dirichlet":
            return terms.expected_log_weights(self.global_concentration()).expand_as(concentration)
        return torch.full_like(concentration, -math.log(self.n_clusters))

    def weights_kl(self, concentration: torch.Tensor) -> torch.Tensor:
        """``kl_d`` per cell: of ``q(d|z,c)``, or the global ``q(d)``'s shared among the cells."""
        if self.mixture_weights == "dirichlet":
            return terms.kl_d(concentration, self.prior_concentration)
        if self.mixture_weights == "global_dirichlet":
            global_kl = terms.kl_d(self.global_concentration(), self.prior_concentration)
            return (global_kl / self.n_cells).expand(concentration.shape[:-1])
        return torch.zeros_like(concentration[..., 0])

    def mixture_proportions(self) -> torch.Tensor:
        """Return the mixture weights ``E[d]`` under the global ``q(d)``, else under ``p(d)``."""
        concentration = (
            self.global_concentration()
            if self.mixture_weights == "global_dirichlet"
            else self.prior_concentration
        )
        return concentration / concentration.sum()

    def elbo_terms(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        n_observed_labels: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-cell reconstruction and KL terms of the negative ELBO, named as in the model.

        Computed in float32 whatever the training precision (``precision="bf16-mixed"``
        leaves the networks' outputs in bfloat16). ``w`` enters through its sample; ``z``,
        ``y`` and ``d`` are integrated in closed form. Extra leading sample dimensions of
        ``w`` (``n_samples > 1``) broadcast.
        """
        x = tensors[REGISTRY_KEYS.X_KEY].float()
        qz, qw = inference_outputs["qz"], inference_outputs["qw"]
        concentration = inference_outputs["qd_concentration"].float()
        q_y, log_q_y = self.responsibilities(
            inference_outputs["qy_logits"].float(),
            tensors[REGISTRY_KEYS.LABELS_KEY],
            n_observed_labels,
        )
        component_kl = terms.gaussian_kl_to_components(
            qz.loc.float(),
            qz.scale.float() ** 2,
            generative_outputs["pz_mean"].float(),
            generative_outputs["pz_var"].float(),
        )
        return {
            "reconstruction_loss": -generative_outputs["px"].log_prob(x).sum(-1),
            "kl_z": terms.kl_z(q_y, component_kl),
            "kl_w": terms.kl_w(qw.loc.float(), qw.scale.float() ** 2),
            "kl_y": terms.kl_y(q_y, log_q_y, self.expected_log_weights(concentration)),
            "kl_d": self.weights_kl(concentration),
        }

    def classification_loss(
        self,
        qy_logits: torch.Tensor,
        labels: torch.Tensor,
        n_observed_labels: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``−log q(y|z)`` averaged over the labelled cells, with their labels and logits."""
        mask = self.labelled_mask(labels, n_observed_labels)
        logits, true_labels = qy_logits[mask].float(), labels.squeeze(-1)[mask].long()
        return F.cross_entropy(logits, true_labels), true_labels, logits

    def optional_terms(
        self, log_q_y: torch.Tensor, condition: torch.Tensor
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """Compute the minibatch terms outside the ELBO, each with its weight.

        A term whose weight is 0 is computed without gradient, only to be logged, so that it
        can never carry a NaN gradient into the loss.
        """
        weighted = {
            "marginal_kl_y": (self.marginal_kl_y_weight, lambda: terms.marginal_kl_y(log_q_y)),
            "mi_y_c": (
                self.mi_y_c_weight,
                lambda: terms.mutual_information_y_c(log_q_y, condition),
            ),
        }
        values = {}
        for name, (weight, compute) in weighted.items():
            with torch.set_grad_enabled(weight > 0 and torch.is_grad_enabled()):
                values[name] = (weight, compute())
        return values

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
        labelled_tensors: dict[str, torch.Tensor] | None = None,
        classification_ratio: float | None = None,
        n_observed_labels: int | None = None,
    ) -> LossOutput:
        """Negative ELBO, plus the weighted classification term when labels are observed.

        ``loss = mean(reconstruction + kl_weight · Σ_t weight_t · kl_t)
        + kl_weight · marginal_kl_y_weight · KL(q̄(y) ‖ Uniform)
        + kl_weight · mi_y_c_weight · I(y; c)
        + classification_ratio · mean(−log q(y|z))``, where the classification term uses
        ``labelled_tensors`` when given (semi-supervised training) and otherwise the labelled
        cells of the minibatch. The two minibatch terms enter only when their weight is above
        0; they are logged either way. ``n_observed_labels`` is guided training's mode: label
        codes below it are observed (see :meth:`labelled_mask`).
        """
        per_cell = self.elbo_terms(
            tensors, inference_outputs, generative_outputs, n_observed_labels
        )
        raise_if_non_finite(per_cell)
        if self._learns_global_weights():
            q_y, _ = self.responsibilities(
                inference_outputs["qy_logits"].float(),
                tensors[REGISTRY_KEYS.LABELS_KEY],
                n_observed_labels,
            )
            self.update_weight_proportions(q_y)
        kl_local = {name: per_cell[name] for name in self.term_weights}
        weighted_kl = sum(self.term_weights[name] * value for name, value in kl_local.items())
        loss = torch.mean(per_cell["reconstruction_loss"] + kl_weight * weighted_kl)
        log_q_y = F.log_softmax(inference_outputs["qy_logits"].float(), dim=-1)
        optional = self.optional_terms(log_q_y, tensors[REGISTRY_KEYS.BATCH_KEY])
        for weight, value in optional.values():
            if weight > 0:
                loss = loss + kl_weight * weight * value

        classification = true_labels = logits = None
        if labelled_tensors is not None:
            labels = labelled_tensors[REGISTRY_KEYS.LABELS_KEY]
            qy_logits = self.inference(**self._get_inference_input(labelled_tensors))["qy_logits"]
        else:
            labels, qy_logits = tensors[REGISTRY_KEYS.LABELS_KEY], inference_outputs["qy_logits"]
        n_observed = self.n_labels if n_observed_labels is None else n_observed_labels
        if n_observed > 0 and self.labelled_mask(labels, n_observed).any():
            classification, true_labels, logits = self.classification_loss(
                qy_logits, labels, n_observed
            )
            ratio = (
                self.classification_ratio if classification_ratio is None else classification_ratio
            )
            loss = loss + ratio * classification

        return LossOutput(
            loss=loss,
            reconstruction_loss=per_cell["reconstruction_loss"],
            kl_local=kl_local,
            classification_loss=classification,
            true_labels=true_labels,
            logits=logits,
            extra_metrics={
                **{name: value.detach() for name, (_, value) in optional.items()},
                **{name: value.mean().detach() for name, value in kl_local.items()},
            },
        )

    @torch.inference_mode()
    def sample(
        self,
        tensors: dict[str, torch.Tensor],
        n_samples: int = 1,
        max_poisson_rate: float = 1e8,
        generative_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """Draw posterior predictive samples: ``x ~ p(x|z,c)`` with ``z ~ q(z|x,c)``.

        Used by :meth:`~scvi.model.base.RNASeqMixin.posterior_predictive_sample`, as scVI's
        ``sample``. Poisson rates are clipped at ``max_poisson_rate``; ``generative_kwargs``
        go to :meth:`generative` (``transform_batch``).

        Returns
        -------
        Tensor on the CPU of shape ``(n_cells, n_genes)``, or ``(n_cells, n_genes, n_samples)``
        when ``n_samples > 1``.
        """
        _, generative_outputs = self.forward(
            tensors,
            inference_kwargs={"n_samples": n_samples},
            generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        distribution = generative_outputs["px"]
        if self.gene_likelihood == "poisson":
            distribution = Poisson(distribution.rate.clamp(max=max_poisson_rate))
        samples = distribution.sample()
        return (samples.permute(1, 2, 0) if n_samples > 1 else samples).cpu()

    def log_importance_weights(
        self, tensors: dict[str, torch.Tensor], n_samples: int
    ) -> torch.Tensor:
        """``log p(x,z,w|c) − log q(z,w|x,c)`` at ``n_samples`` samples of ``q``: ``(S, n_cells)``.

        ``y`` and ``d`` are summed out exactly: ``p(z|w,c) = Σ_k π_k p(z|w,y=k,c)`` with
        ``π_k = E[d_k]`` (:meth:`mixture_proportions`).
        """
        inference = self.inference(**self._get_inference_input(tensors), n_samples=n_samples)
        generative = self.generative(**self._get_generative_input(tensors, inference))
        z, w = inference["z"], inference["w"]
        if n_samples == 1:
            z, w = z.unsqueeze(0), w.unsqueeze(0)
        log_px = generative["px"].log_prob(tensors[REGISTRY_KEYS.X_KEY].float()).sum(-1)
        pz = Normal(generative["pz_mean"], generative["pz_var"].sqrt())
        log_pz_given_k = pz.log_prob(z.unsqueeze(-2).float()).sum(-1)
        log_mixture_weights = torch.log(self.mixture_proportions())
        log_pz = torch.logsumexp(log_pz_given_k + log_mixture_weights, dim=-1)
        log_pw = Normal(0.0, 1.0).log_prob(w.float()).sum(-1)
        log_qz = inference["qz"].log_prob(z).sum(-1)
        log_qw = inference["qw"].log_prob(w).sum(-1)
        return log_px.reshape(log_pz.shape) + log_pz + log_pw - log_qz - log_qw

    @torch.inference_mode()
    @auto_move_data
    def marginal_ll(
        self,
        tensors: dict[str, torch.Tensor],
        n_mc_samples: int = 1000,
        return_mean: bool = False,
        n_mc_samples_per_pass: int = 50,
    ) -> torch.Tensor | float:
        """Importance-sampled ``log p(x|c)`` of each cell, with ``q(z|x,c) q(w|x,c)`` as proposal.

        ``log p(x|c) ≈ log (1/S) Σ_s p(x, z_s, w_s | c) / q(z_s, w_s | x, c)``, ``y`` and ``d``
        summed out exactly (:meth:`log_importance_weights`). Its expectation is a lower bound
        of ``log p(x|c)`` that tightens as ``S`` grows and is never below the ELBO, whose
        ``q(y)`` and ``q(d)`` add their own gap. Used by
        :meth:`~scvi.model.base.VAEMixin.get_marginal_ll` (higher is better).

        Parameters
        ----------
        tensors
            A minibatch.
        n_mc_samples
            Number of importance samples ``S``.
        return_mean
            Return the mean over the minibatch's cells instead of one value per cell.
        n_mc_samples_per_pass
            Samples drawn per forward pass (memory grows with it).
        """
        passes = [
            self.log_importance_weights(tensors, min(n_mc_samples_per_pass, n_mc_samples - start))
            for start in range(0, n_mc_samples, n_mc_samples_per_pass)
        ]
        log_lkl = torch.logsumexp(torch.cat(passes), dim=0) - math.log(n_mc_samples)
        return log_lkl.mean().item() if return_mean else log_lkl.cpu()
