"""The c*GMΔVÆ module: networks, generative process and the negative ELBO."""

from __future__ import annotations

from typing import Literal

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
MixtureWeights = Literal["dirichlet", "uniform"]


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
    ``p(z|w,y=k,c) = N(mu_k(w,c), sigma_k(w,c))``. Inference networks ``q(z|x,c)``, ``q(w|x,c)``
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
        ``"dirichlet"`` (c*GMΔVÆ) or ``"uniform"``: fixed uniform weights as in the GMVAE of
        Dilokthanakul et al.; then ``kl_d`` vanishes and ``kl_y = KL(q(y|z) ‖ Uniform)``.
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
        mean_bound: float = 10.0,
        log_var_bound: float = 8.0,
        concentration_floor: float = 1e-2,
    ):
        super().__init__()
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
        self.mean_bound = mean_bound
        self.log_var_bound = log_var_bound
        self.concentration_floor = concentration_floor
        self.register_buffer("prior_concentration", torch.full((n_clusters,), dirichlet_alpha))

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
            n_latent_w + n_continuous_cov, (2 * n_clusters * n_latent,), **network
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

        ``z`` and ``w`` are reparameterised samples; the cluster logits and Dirichlet
        concentrations are computed from the sample ``z``. Cells with zero counts get a
        library size of one. With ``n_samples > 1``, samples and library sizes get a leading
        dimension of that size (as in scVI, for :class:`~scvi.model.base.RNASeqMixin`).
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
            "qy_logits": self.cluster_logits(z, batch_index, cat_covs, cont_covs),
            "qd_concentration": self.dirichlet_concentration(z, batch_index, cat_covs, cont_covs),
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
        """Logits of ``q(y|z,c)``, shape ``(n_cells, n_clusters)``."""
        covariates = self._covariates(batch_index, cat_covs)
        return self.cluster_head(self._with_continuous(z, cont_covs), *covariates)[0]

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
        """Means and variances of ``p(z|w,y=k,c)``, each ``(n_cells, n_clusters, n_latent)``."""
        covariates = self._covariates(batch_index, cat_covs)
        raw = self.prior_network(self._with_continuous(w, cont_covs), *covariates)[0]
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
        """Return the likelihood ``p(x|z,c)`` chosen by ``gene_likelihood``."""
        covariates = self._covariates(batch_index, cat_covs)
        decoder_input = self._with_continuous(z, cont_covs)
        if self.gene_likelihood == "normal":
            loc = self.decoder(decoder_input, *covariates)[0]
            return Normal(loc, torch.exp(self.px_log_scale).clamp(min=1e-4), validate_args=False)
        if self.gene_likelihood == "bernoulli":
            logits = self.decoder(decoder_input, *covariates)[0]
            return Bernoulli(logits=logits, validate_args=False)
        px_scale, px_r, px_rate, px_dropout = self.decoder(
            self.dispersion, decoder_input, library, *covariates
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

    def labelled_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean mask of cells whose label is observed (code ``< n_labels``)."""
        return labels.squeeze(-1) < self.n_labels

    def responsibilities(self, qy_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``q(y|z,c)`` for unlabelled cells and the one-hot observed label for labelled ones."""
        probs = F.softmax(qy_logits, dim=-1)
        mask = self.labelled_mask(labels)
        if not mask.any():
            return probs
        one_hot = F.one_hot(labels.squeeze(-1).clamp(max=self.n_clusters - 1), self.n_clusters)
        return torch.where(mask.unsqueeze(-1), one_hot.to(probs.dtype), probs)

    def elbo_terms(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, generative_outputs: dict
    ) -> dict[str, torch.Tensor]:
        """Per-cell reconstruction and KL terms of the negative ELBO, named as in the model."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        qz, qw = inference_outputs["qz"], inference_outputs["qw"]
        concentration = inference_outputs["qd_concentration"]
        q_y = self.responsibilities(
            inference_outputs["qy_logits"], tensors[REGISTRY_KEYS.LABELS_KEY]
        )
        component_kl = terms.gaussian_kl_to_components(
            qz.loc, qz.scale**2, generative_outputs["pz_mean"], generative_outputs["pz_var"]
        )
        if self.mixture_weights == "dirichlet":
            y_term = terms.kl_y(q_y, concentration)
            d_term = terms.kl_d(concentration, self.prior_concentration)
        else:
            uniform = torch.full_like(q_y, 1.0 / self.n_clusters)
            y_term = (torch.special.xlogy(q_y, q_y) - q_y * torch.log(uniform)).sum(-1)
            d_term = torch.zeros_like(y_term)
        return {
            "reconstruction_loss": -generative_outputs["px"].log_prob(x).sum(-1),
            "kl_z": terms.kl_z(q_y, component_kl),
            "kl_w": terms.kl_w(qw.loc, qw.scale**2),
            "kl_y": y_term,
            "kl_d": d_term,
        }

    def classification_loss(
        self, qy_logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``−log q(y|z)`` averaged over the labelled cells, with their labels and logits."""
        mask = self.labelled_mask(labels)
        logits, true_labels = qy_logits[mask], labels.squeeze(-1)[mask].long()
        return F.cross_entropy(logits, true_labels), true_labels, logits

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
        labelled_tensors: dict[str, torch.Tensor] | None = None,
        classification_ratio: float | None = None,
    ) -> LossOutput:
        """Negative ELBO, plus the weighted classification term when labels are observed.

        ``loss = mean(reconstruction + kl_weight · Σ_t weight_t · kl_t)
        + kl_weight · marginal_kl_y_weight · KL(q̄(y) ‖ Uniform)
        + kl_weight · mi_y_c_weight · I(y; c)
        + classification_ratio · mean(−log q(y|z))``, where the classification term uses
        ``labelled_tensors`` when given (semi-supervised training) and otherwise the labelled
        cells of the minibatch.
        """
        per_cell = self.elbo_terms(tensors, inference_outputs, generative_outputs)
        raise_if_non_finite(per_cell)
        kl_local = {name: per_cell[name] for name in self.term_weights}
        weighted_kl = sum(self.term_weights[name] * value for name, value in kl_local.items())
        loss = torch.mean(per_cell["reconstruction_loss"] + kl_weight * weighted_kl)
        q_y = F.softmax(inference_outputs["qy_logits"], dim=-1)
        marginal_kl_y = terms.marginal_kl_y(q_y)
        loss = loss + kl_weight * self.marginal_kl_y_weight * marginal_kl_y
        mi_y_c = terms.mutual_information_y_c(
            q_y, tensors[REGISTRY_KEYS.BATCH_KEY], max(self.n_batch, 1)
        )
        loss = loss + kl_weight * self.mi_y_c_weight * mi_y_c

        classification = true_labels = logits = None
        if labelled_tensors is not None:
            labels = labelled_tensors[REGISTRY_KEYS.LABELS_KEY]
            qy_logits = self.inference(**self._get_inference_input(labelled_tensors))["qy_logits"]
        else:
            labels, qy_logits = tensors[REGISTRY_KEYS.LABELS_KEY], inference_outputs["qy_logits"]
        if self.n_labels > 0 and self.labelled_mask(labels).any():
            classification, true_labels, logits = self.classification_loss(qy_logits, labels)
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
                "marginal_kl_y": marginal_kl_y.detach(),
                "mi_y_c": mi_y_c.detach(),
                **{name: value.mean().detach() for name, value in kl_local.items()},
            },
        )
