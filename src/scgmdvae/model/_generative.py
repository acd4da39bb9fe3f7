"""Generative analyses of c*GMΔVÆ.

Sampling, latent traversals, counterfactual condition response, normalised expression and
cluster markers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from torch.distributions import Distribution, Normal

from ..module._module import COUNT_LIKELIHOODS
from ._latent_shift import MIN_CELLS_PER_CONDITION, ConditionShifts, condition_shifts

COUNTERFACTUAL_LATENTS = ("posterior", "shift", "prior_mean", "abduction")
GENERATIVE_COVARIATES = ("library", "batch_index", "cat_covs", "cont_covs")
Covariates = dict[str, torch.Tensor | None]


class GenerativeMixin:
    """Generation and expression analyses for :class:`~scgmdvae.CGMDVAE`.

    Meant to precede :class:`~scvi.model.base.RNASeqMixin` among the model's bases: it guards
    :meth:`get_normalized_expression`, on which RNASeqMixin's ``differential_expression`` runs.
    """

    @property
    def condition_names(self) -> list[str]:
        """Categories of the registered condition in code order."""
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
        return [str(c) for c in state.categorical_mapping]

    @property
    def _has_condition(self) -> bool:
        return self.registry_["setup_args"]["condition_key"] is not None

    def _condition_code(self, condition: str) -> int:
        """Code of ``condition``; refused for a model set up without a condition."""
        if not self._has_condition:
            raise ValueError(
                "The model was set up without a condition (condition_key=None), so it takes no "
                "condition argument."
            )
        return self._code(condition, self.condition_names, "condition")

    @staticmethod
    def _code(name: str, names: list[str], what: str) -> int:
        if str(name) not in names:
            raise ValueError(f"Unknown {what} {name!r}; the model's {what}s are {names}.")
        return names.index(str(name))

    def _require_count_likelihood(self, method: str) -> None:
        likelihood = self.module.gene_likelihood
        if likelihood not in COUNT_LIKELIHOODS:
            raise ValueError(
                f"{method} needs a count likelihood ({', '.join(COUNT_LIKELIHOODS)}), not "
                f"{likelihood!r}. For this model use predict_condition_response, "
                "sample(give_mean=True) or traverse_latent, which return the likelihood's mean."
            )

    def _covariates_of(self, tensors: dict, inference_outputs: dict) -> Covariates:
        """Log library size and covariates of a minibatch, as the module's decoder takes them."""
        inputs = self.module._get_generative_input(tensors, inference_outputs)
        return {
            key: None if inputs[key] is None else inputs[key].to(self.device)
            for key in GENERATIVE_COVARIATES
        }

    @torch.inference_mode()
    def _training_cell_covariates(self, indices: np.ndarray) -> Covariates:
        """Covariates of training cells; ``indices`` may repeat cells (one row per entry)."""
        unique, inverse = np.unique(indices, return_inverse=True)
        parts = []
        for tensors in self._make_data_loader(adata=self.adata, indices=unique):
            inference = self.module.inference(**self.module._get_inference_input(tensors))
            parts.append(self._covariates_of(tensors, inference))
        rows = torch.as_tensor(inverse, device=self.device)
        return {
            key: None if parts[0][key] is None else torch.cat([p[key] for p in parts])[rows]
            for key in GENERATIVE_COVARIATES
        }

    def _reference_cells(self, n_cells: int, condition: str | None) -> np.ndarray:
        """Draw training cells (of ``condition`` if given) uniformly with replacement."""
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        candidates = np.arange(codes.size)
        if condition is not None:
            code = self._condition_code(condition)
            candidates = candidates[codes == code]
        return candidates[torch.randint(candidates.size, (n_cells,)).numpy()]

    @staticmethod
    def _with(
        covariates: Covariates,
        library_size: float | None = None,
        condition_code: int | None = None,
        n_rows: int | None = None,
    ) -> Covariates:
        """Covariates with a fixed library size and/or condition, or rows repeated ``n_rows``."""
        result = dict(covariates)
        if library_size is not None:
            result["library"] = torch.full_like(result["library"], float(np.log(library_size)))
        if condition_code is not None:
            result["batch_index"] = torch.full_like(result["batch_index"], condition_code)
        if n_rows is not None:
            result = {k: None if v is None else v.expand(n_rows, -1) for k, v in result.items()}
        return result

    def _observation(self, z: torch.Tensor, covariates: Covariates) -> Distribution:
        return self.module.observation_distribution(
            z,
            covariates["library"],
            covariates["batch_index"],
            covariates["cat_covs"],
            covariates["cont_covs"],
        )

    def _component(
        self, w: torch.Tensor, y: torch.Tensor, covariates: Covariates
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``p(z|w,y,c)`` for each cell's own cluster ``y``."""
        means, variances = self.module.component_parameters(
            w, covariates["batch_index"], covariates["cat_covs"], covariates["cont_covs"]
        )
        rows = torch.arange(w.shape[0], device=w.device)
        return means[rows, y], variances[rows, y]

    @torch.inference_mode()
    def sample(
        self,
        n_samples: int = 100,
        cluster: str | None = None,
        condition: str | None = None,
        library_size: float | None = None,
        give_mean: bool = False,
    ) -> AnnData:
        """Generate new cells from the model's generative process.

        Draws ``w ~ N(0, I)``, the cluster ``y``, ``z ~ p(z|w,y,c)`` and ``x ~ p(x|z,c)``.
        Every generated cell borrows the condition, the further covariates and the library size
        of a training cell drawn at random (of ``condition`` when given), so conditions appear
        at their training frequencies and library sizes follow the training data of that
        condition. Without ``cluster``, ``y`` is drawn from that training cell's ``q(y|z,c)``,
        so clusters appear with the model's expected mixture weights (the mean responsibilities
        of the training cells of that condition). Uses torch's global random generator (set
        ``scvi.settings.seed`` for reproducible draws).

        Parameters
        ----------
        n_samples
            Number of cells to generate.
        cluster
            Name of the generating cluster (one of :attr:`cluster_names`); ``None`` draws it.
        condition
            Category of the registered condition; ``None`` draws it with the training cells.
        library_size
            Total counts of every generated cell, for count likelihoods; ``None`` uses the
            observed library sizes (or size factors) of the borrowed training cells. Ignored by
            the ``"normal"`` and ``"bernoulli"`` likelihoods.
        give_mean
            Return the mean of ``p(x|z,c)`` (expected counts, pixel probabilities) instead of a
            draw from it, for example to show generated images without noise.

        Returns
        -------
        AnnData with the model's genes in ``var_names``, ``obs["cluster"]`` (categories
        :attr:`cluster_names`) and ``obs["condition"]`` (categories :attr:`condition_names`).
        """
        self._check_if_trained(warn=False)
        self.module.eval()
        reference = self._reference_cells(n_samples, condition)
        covariates = self._with(self._training_cell_covariates(reference), library_size)
        if cluster is None:
            unique, inverse = np.unique(reference, return_inverse=True)
            probs = self.get_cluster_probabilities(indices=unique).to_numpy()[inverse]
            y = torch.multinomial(torch.as_tensor(probs), 1).squeeze(-1)
        else:
            y = torch.full((n_samples,), self._code(cluster, self.cluster_names, "cluster"))
        y = y.to(self.device)
        w = torch.randn(n_samples, self.module.n_latent_w, device=self.device)
        mean, variance = self._component(w, y, covariates)
        px = self._observation(Normal(mean, variance.sqrt()).sample(), covariates)
        x = px.mean if give_mean else px.sample()
        condition_codes = covariates["batch_index"].squeeze(-1).long().cpu().numpy()
        obs = pd.DataFrame(
            {
                "cluster": pd.Categorical(
                    np.asarray(self.cluster_names)[y.cpu().numpy()],
                    categories=self.cluster_names,
                ),
                "condition": pd.Categorical(
                    np.asarray(self.condition_names)[condition_codes],
                    categories=self.condition_names,
                ),
            },
            index=[f"sample_{i}" for i in range(n_samples)],
        )
        return AnnData(
            X=x.cpu().numpy().astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=self.adata.var_names.copy()),
        )

    @torch.inference_mode()
    def traverse_latent(
        self,
        space: Literal["w", "z"] = "w",
        dim: int = 0,
        values: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0),
        condition: str | None = None,
        library_size: float = 1.0,
    ) -> np.ndarray:
        """Decode a sweep along one latent dimension for every cluster.

        With ``space="w"``, ``w`` is zero except ``w[dim] = value`` and every cluster's
        component mean ``mu_k(w, c)`` is decoded. With ``space="z"``, ``w = 0`` and
        ``z = mu_k(0, c) + value · sigma_k(0, c)`` along ``dim`` (``values`` are in units of the
        component's standard deviation). Further covariates come from one random training cell
        of the condition.

        Parameters
        ----------
        space
            ``"w"`` or ``"z"``.
        dim
            The latent dimension that varies.
        values
            Positions along ``dim``.
        condition
            Category of the registered condition; defaults to the first one.
        library_size
            Total counts of the decoded means for count likelihoods (``1`` gives proportions);
            ignored by ``"normal"`` and ``"bernoulli"``.

        Returns
        -------
        Decoded means of shape ``(n_clusters, len(values), n_features)``: a grid with one row per
        cluster (in :attr:`cluster_names` order) and one column per value. For images, reshape
        the last axis to the image shape.
        """
        if space not in ("w", "z"):
            raise ValueError(f"space must be 'w' or 'z', not {space!r}.")
        n_dims = self.module.n_latent_w if space == "w" else self.module.n_latent
        if not 0 <= dim < n_dims:
            raise ValueError(f"dim must be in [0, {n_dims}) for space {space!r}, not {dim}.")
        self._check_if_trained(warn=False)
        self.module.eval()
        if condition is None and self._has_condition:
            condition = self.condition_names[0]
        reference = self._training_cell_covariates(self._reference_cells(1, condition))
        steps = torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)
        n_steps, n_clusters = steps.numel(), self.module.n_clusters
        w = torch.zeros(n_steps if space == "w" else 1, self.module.n_latent_w, device=self.device)
        if space == "w":
            w[:, dim] = steps
        covariates = self._with(reference, library_size, n_rows=w.shape[0])
        means, variances = self.module.component_parameters(
            w, covariates["batch_index"], covariates["cat_covs"], covariates["cont_covs"]
        )
        z = means.transpose(0, 1).expand(n_clusters, n_steps, -1).clone()
        if space == "z":
            z[..., dim] += steps * variances[0, :, dim, None].sqrt()
        decoded = self._observation(
            z.reshape(n_clusters * n_steps, -1),
            self._with(reference, library_size, n_rows=n_clusters * n_steps),
        ).mean
        return decoded.reshape(n_clusters, n_steps, -1).cpu().numpy()

    @torch.inference_mode()
    def _latent_shifts(self, target: int) -> ConditionShifts:
        """:func:`condition_shifts` to ``target`` over the model's cells (posterior means)."""
        z, clusters, conditions = [], [], []
        for tensors in self._make_data_loader(adata=self.adata):
            inference = self.module.inference(**self.module._get_inference_input(tensors))
            labels = tensors[REGISTRY_KEYS.LABELS_KEY].to(self.device)
            z.append(inference["qz"].loc)
            clusters.append(self._cluster_of(inference, labels))
            conditions.append(tensors[REGISTRY_KEYS.BATCH_KEY].to(self.device).ravel())
        return condition_shifts(
            torch.cat(z),
            torch.cat(clusters),
            torch.cat(conditions),
            target,
            self.module.n_clusters,
            len(self.condition_names),
        )

    def _shift_draws(
        self, target: int, indices: np.ndarray, adata: AnnData, n_samples: int
    ) -> torch.Tensor:
        """Shifts to ``target``, ``(n_draws, n_conditions, n_clusters, n_latent)``.

        One draw, the shifts themselves, when ``n_samples`` is 1; else ``n_samples`` draws
        with each kriged shift drawn from its kriging distribution. Refused when a predicted
        cell's condition has no shifts.
        """
        shifts, variances, defined = self._latent_shifts(target)
        manager = self.get_anndata_manager(adata, required=True)
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
        undefined = [self.condition_names[c] for c in np.unique(codes[indices]) if not defined[c]]
        if undefined:
            raise ValueError(
                f"latent='shift' needs a cluster with at least {MIN_CELLS_PER_CONDITION} of the "
                f"model's cells in both {undefined[0]!r} and {self.condition_names[target]!r}; "
                "there is none. Use latent='posterior'."
            )
        if n_samples == 1:
            return shifts.unsqueeze(0)
        noise = torch.randn((n_samples, *shifts.shape), dtype=shifts.dtype, device=shifts.device)
        return shifts + variances.sqrt().unsqueeze(-1) * noise

    def _cluster_of(self, inference: dict, labels: torch.Tensor) -> torch.Tensor:
        """Return each cell's label if labelled, else its most probable cluster of ``q(y|z,c)``."""
        return self.module.responsibilities(inference["qy_logits"], labels)[0].argmax(-1)

    def _counterfactual_latent(
        self,
        latent: str,
        z: torch.Tensor,
        w: torch.Tensor,
        y: torch.Tensor,
        observed: Covariates,
        counterfactual: Covariates,
        shifts: torch.Tensor | None,
    ) -> torch.Tensor:
        """``z'`` of :meth:`predict_condition_response` for cells of cluster ``y``.

        ``shifts`` are one draw of :meth:`_shift_draws`, ``(n_conditions, n_clusters,
        n_latent)``.
        """
        if latent == "posterior":
            return z
        if latent == "shift":
            return z + shifts[observed["batch_index"].ravel().long(), y]
        mean, variance = self._component(w, y, counterfactual)
        if latent == "prior_mean":
            return mean
        source_mean, source_variance = self._component(w, y, observed)
        return mean + (variance / source_variance).sqrt() * (z - source_mean)

    def _counterfactual_draws(
        self,
        tensors: dict[str, torch.Tensor],
        latent: str,
        target: int,
        library_size: float | None,
        n_samples: int,
        shifts: torch.Tensor | None,
    ) -> torch.Tensor:
        """Predictions of a minibatch under condition ``target``, ``(n_samples, cells, genes)``.

        One draw at the posterior means of ``z`` and ``w`` when ``n_samples`` is 1, else
        ``n_samples`` draws from ``q(z|x,c)`` and ``q(w|x,c)``; draw ``i`` takes the shifts
        ``shifts[i]`` of :meth:`_shift_draws`.
        """
        inference = self.module.inference(**self.module._get_inference_input(tensors))
        observed = self._covariates_of(tensors, inference)
        counterfactual = self._with(observed, library_size, condition_code=target)
        y = self._cluster_of(inference, tensors[REGISTRY_KEYS.LABELS_KEY].to(self.device))
        qz, qw = inference["qz"], inference["qw"]
        draws = (
            [(qz.loc, qw.loc)]
            if n_samples == 1
            else zip(qz.sample((n_samples,)), qw.sample((n_samples,)), strict=True)
        )
        predictions = []
        for draw, (z, w) in enumerate(draws):
            draw_shifts = None if shifts is None else shifts[draw]
            z_target = self._counterfactual_latent(
                latent, z, w, y, observed, counterfactual, draw_shifts
            )
            predictions.append(self._observation(z_target, counterfactual).mean.cpu())
        return torch.stack(predictions)

    @torch.inference_mode()
    def predict_condition_response(
        self,
        target_condition: str,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        source_condition: str | None = None,
        latent: Literal["posterior", "shift", "prior_mean", "abduction"] = "shift",
        library_size: float | Literal["observed"] = 1.0,
        n_samples: int = 1,
        batch_size: int | None = None,
    ) -> AnnData:
        """Predict the cells' expression under another condition (counterfactual).

        Each cell is encoded under its observed condition ``c`` (posterior means of ``z`` and
        ``w``, or ``n_samples`` draws from ``q(z|x,c)`` and ``q(w|x,c)``), its latent code
        ``z'`` under the target condition ``c'`` is chosen by ``latent``, and the prediction is
        the mean of ``p(x|z',c')``:

        - ``"shift"``: ``z' = z + δ_k(c → c')``, scGen's latent arithmetic with the model's
          clusters in place of cell types. For a cluster ``k`` with at least 10 of the model's
          cells under both ``c`` and ``c'``, ``δ_k`` is the difference of its mean ``z`` under
          ``c'`` and under ``c``. A cluster not seen under ``c'`` (the scGen setting) takes
          the shift kriged from theirs over the clusters' mean ``z`` under ``c`` (a Gaussian
          process with a constant mean, its length scale and noise by maximum likelihood):
          the response of the types that look most like it when some lie within the length
          scale, and the average response (as scGen's one shift) when it is unlike all of
          them. Unlike scGen, ``z'`` is decoded under ``c'``: the conditions need not share
          a region of ``z``. A ``ValueError`` says so when no cluster is seen under both.
        - ``"posterior"``: ``z' = z``; the decoder carries the condition effect (as scVI's
          ``transform_batch``).
        - ``"prior_mean"``: ``z' = mu_k(w,c')``, the mean of the cell's mixture component
          under ``c'`` with ``w`` and the cluster ``k`` kept. The prior network takes ``c``, so
          the component itself moves with the condition.
        - ``"abduction"``: as ``"prior_mean"``, keeping the cell's standardised offset within
          its component, ``z' = mu_k(w,c') + sigma_k(w,c')/sigma_k(w,c) · (z − mu_k(w,c))``.

        A cell's cluster (``k`` above, and the clusters of ``"shift"``) is its label if it is
        labelled, else its most probable cluster of ``q(y|z,c)``. The default is ``"shift"``,
        the best of the four on Kang et al. (2018) with one cell type's stimulated cells held
        out (the benchmarks page). With the thesis' prior the conditions sit apart in ``z``, so
        ``"posterior"`` decodes ``z`` in a region the decoder saw only under ``c``; and when
        cluster ``k`` was never observed under ``c'`` (the scGen setting), ``mu_k(w,c')`` of
        ``"prior_mean"`` and ``"abduction"`` is not constrained by any data.

        Parameters
        ----------
        target_condition
            Category of the registered condition to predict.
        adata
            AnnData registered like the model's; defaults to the model's.
        indices
            Cells to predict; defaults to all.
        source_condition
            Keep only the cells observed under this condition.
        latent
            ``"posterior"``, ``"shift"``, ``"prior_mean"`` or ``"abduction"`` (see above).
        library_size
            For count likelihoods: total counts of the predicted profile (``1`` gives
            proportions, ``1e4`` counts per ten thousand) or ``"observed"`` for expected counts
            at each cell's observed library size. Ignored by ``"normal"`` and ``"bernoulli"``,
            which return the likelihood's mean.
        n_samples
            Number of posterior draws of ``z`` and ``w`` per cell; ``1`` uses the posterior
            means. With more, ``X`` is the mean of the draws' predictions and
            ``layers["std"]`` their standard deviation: the posterior uncertainty of the
            counterfactual (the cluster ``k`` is the posterior mean's). With ``"shift"``, each
            draw also draws the kriged shift of a cluster not seen under ``c'`` from its
            kriging distribution (one shift per draw for all of the cluster's cells), so
            that the spread includes how uncertain the borrowed response is: more for a type
            unlike every seen one.
        batch_size
            Minibatch size for the forward pass.

        Returns
        -------
        AnnData of predicted expression with the model's genes and the predicted cells' original
        ``obs``; ``uns["condition_response"]`` records the settings.
        """
        if latent not in COUNTERFACTUAL_LATENTS:
            raise ValueError(
                f"latent must be one of {list(COUNTERFACTUAL_LATENTS)}, not {latent!r}."
            )
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, not {n_samples}.")
        self._check_if_trained(warn=False)
        self.module.eval()
        adata = self._validate_anndata(adata)
        target = self._condition_code(target_condition)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        if source_condition is not None:
            manager = self.get_anndata_manager(adata, required=True)
            codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).ravel()
            source = self._condition_code(source_condition)
            indices = indices[codes[indices] == source]
            if indices.size == 0:
                raise ValueError(f"No given cell is in condition {source_condition!r}.")
        shifts = (
            self._shift_draws(target, indices, adata, n_samples) if latent == "shift" else None
        )
        fixed_library = None if library_size == "observed" else library_size
        predictions = []
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        for tensors in loader:
            predictions.append(
                self._counterfactual_draws(
                    tensors, latent, target, fixed_library, n_samples, shifts
                )
            )
        samples = torch.cat(predictions, dim=1).numpy().astype(np.float32)
        return AnnData(
            X=samples.mean(0),
            obs=adata.obs.iloc[indices].copy(),
            var=pd.DataFrame(index=adata.var_names.copy()),
            layers={"std": samples.std(0)} if n_samples > 1 else None,
            uns={
                "condition_response": {
                    "target_condition": str(target_condition),
                    "latent": latent,
                    "library_size": library_size,
                    "n_samples": n_samples,
                }
            },
        )

    def get_normalized_expression(self, *args, **kwargs) -> np.ndarray | pd.DataFrame:
        """Library-size-free expression decoded from posterior samples of ``z``.

        :meth:`scvi.model.base.RNASeqMixin.get_normalized_expression`, same arguments and
        outputs: the decoder's proportions ``px.scale`` (times ``library_size``) at samples of
        ``q(z|x,c)``. ``transform_batch`` decodes under another condition with ``z`` unchanged.
        Only for count likelihoods; ``weights="importance"`` is not supported because scvi's
        importance weights assume a standard normal prior on ``z``.

        Raises
        ------
        ValueError
            For the ``"normal"`` and ``"bernoulli"`` likelihoods, which have no library size.
        """
        self._require_count_likelihood("get_normalized_expression")
        if kwargs.get("weights") == "importance":
            self.get_importance_weights()
        return super().get_normalized_expression(*args, **kwargs)

    def get_importance_weights(self, *args, **kwargs) -> np.ndarray:
        """Refused: scvi-tools' importance weights assume a standard normal prior on ``z``.

        c*GMΔVÆ's prior on ``z`` is a mixture, so those weights would be wrong. Use
        ``weights="uniform"`` in :meth:`get_normalized_expression` and
        :meth:`differential_expression`, and :meth:`get_marginal_ll` for an importance-sampled
        likelihood under the model's own prior.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(
            "scvi-tools' importance weights (weights='importance', get_importance_weights) "
            "assume a standard normal prior on z, but c*GMΔVÆ's prior is a mixture. Use "
            "weights='uniform', and get_marginal_ll for an importance-sampled likelihood."
        )

    def differential_expression(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        group1: str | Sequence[str] | None = None,
        group2: str | None = None,
        idx1: Sequence[int] | Sequence[bool] | str | None = None,
        idx2: Sequence[int] | Sequence[bool] | str | None = None,
        **kwargs,
    ) -> pd.DataFrame:
        """Bayesian differential expression, as :meth:`scvi.model.SCVI.differential_expression`.

        Same arguments and result as scvi-tools'. The groups are checked first: a ``groupby``
        column that is not in ``adata.obs``, or a ``group1``/``group2`` without cells, raises
        an error naming the available groups and their sizes. Without ``group1``, each group
        that has cells is tested against the rest (empty categories are skipped).

        Raises
        ------
        KeyError
            If ``groupby`` is not a column of ``adata.obs``.
        ValueError
            For a group without cells, or a ``"normal"`` or ``"bernoulli"`` likelihood.
        """
        self._require_count_likelihood("differential_expression")
        if groupby is not None:
            obs = (self.adata if adata is None else adata).obs
            if groupby not in obs:
                raise KeyError(
                    f"groupby={groupby!r} is not a column of adata.obs (available: "
                    f"{list(obs.columns)})."
                )
            sizes = obs[groupby].value_counts(sort=False)
            sizes = sizes[sizes > 0]
            if group1 is None:
                group1 = list(sizes.index)
            requested = [group1] if isinstance(group1, str) else list(group1)
            missing = [g for g in [*requested, group2] if g is not None and g not in sizes]
            if missing:
                raise ValueError(
                    f"No cells in group(s) {missing} of adata.obs[{groupby!r}]; the groups with "
                    f"cells are {sizes.to_dict()}."
                )
        return super().differential_expression(
            adata, groupby, group1, group2, idx1, idx2, **kwargs
        )

    def cluster_markers(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        n_genes: int = 10,
        delta: float = 0.25,
        batch_size: int | None = None,
        **de_kwargs,
    ) -> pd.DataFrame:
        """Up-regulated marker genes of each cluster against all other cells.

        Runs :meth:`differential_expression` in ``"change"`` mode (one group against the rest)
        for each group and keeps the genes with a positive mean log fold change, ranked by
        Bayes factor and then by log fold change.

        Parameters
        ----------
        adata
            AnnData registered like the model's; defaults to the model's.
        groupby
            ``.obs`` column of the groups; defaults to the model's clusters
            (:meth:`predict_clusters`).
        n_genes
            Markers kept per group.
        delta
            Log-fold-change threshold of ``"change"`` mode.
        batch_size
            Minibatch size for the forward passes.
        **de_kwargs
            Further arguments of :meth:`differential_expression`.

        Returns
        -------
        Tidy DataFrame, one row per (group, marker), with columns ``cluster`` (the group),
        ``rank`` (1 is best), ``gene``, ``lfc_mean``, ``bayes_factor``, ``proba_de``,
        ``scale_in`` and ``scale_out`` (mean normalised expression in and outside the group).
        """
        self._require_count_likelihood("cluster_markers")
        adata = self._validate_anndata(adata)
        groups = (
            self.predict_clusters(adata, batch_size=batch_size)
            if groupby is None
            else pd.Categorical(adata.obs[groupby])
        )
        tables = []
        for group in groups.categories:
            in_group = np.asarray(groups == group)
            if not in_group.any() or in_group.all():
                continue
            result = self.differential_expression(
                adata,
                idx1=in_group,
                idx2=~in_group,
                mode="change",
                delta=delta,
                batch_size=batch_size,
                all_stats=False,
                silent=True,
                **de_kwargs,
            )
            up = result[result["lfc_mean"] > 0].sort_values(
                ["bayes_factor", "lfc_mean"], ascending=False
            )
            up = up.head(n_genes)
            tables.append(
                pd.DataFrame(
                    {
                        "cluster": str(group),
                        "rank": np.arange(1, len(up) + 1),
                        "gene": up.index.to_numpy(),
                        "lfc_mean": up["lfc_mean"].to_numpy(),
                        "bayes_factor": up["bayes_factor"].to_numpy(),
                        "proba_de": up["proba_de"].to_numpy(),
                        "scale_in": up["scale1"].to_numpy(),
                        "scale_out": up["scale2"].to_numpy(),
                    }
                )
            )
        return pd.concat(tables, ignore_index=True)
