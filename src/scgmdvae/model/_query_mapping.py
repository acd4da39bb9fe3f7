"""Query-to-reference mapping (scArches architecture surgery) for :class:`~scgmdvae.CGMDVAE`.

A reference model is trained once; a query (new cells, new conditions) is mapped onto it by
adding one-hot columns for the query's new condition and covariate categories to every
covariate-injected layer and training only those columns. The reference's mixture prior and
classifier heads stay fixed, so query cells land in the reference's clusters.

Recipe for a joint embedding of reference and query::

    query = CGMDVAE.prepare_query_anndata(query, reference_model, inplace=False)
    query_model = CGMDVAE.load_query_data(query, reference_model)
    query_model.train(max_epochs=100)
    reference_model.write_results(reference)
    query_model.write_results(query)
    joint = anndata.concat(
        {"reference": reference, "query": query}, label="dataset", index_unique="-"
    )
    sc.pp.neighbors(joint, use_rep="X_cgmdvae")
    sc.tl.umap(joint)
    sc.pl.umap(joint, color=["dataset", "cgmdvae_cluster"])
"""

from __future__ import annotations

from copy import deepcopy

import pandas as pd
import torch
from anndata import AnnData
from scvi.data._constants import _MODEL_NAME_KEY, _SETUP_ARGS_KEY
from scvi.model._utils import parse_device_args
from scvi.model.base import ArchesMixin, BaseModelClass
from scvi.model.base._archesmixin import _get_loaded_data
from scvi.model.base._save_load import _initialize_model
from torch import nn

from ._surgery import extend_state_dict, injected_linears, registry_category_counts

INFERENCE_NETWORKS = ("encoder", "cluster_head", "dirichlet_head")
GENERATIVE_NETWORKS = ("prior_network", "decoder")


def _missing_genes_error(missing: pd.Index, n_reference: int, advice: str) -> ValueError:
    named = f"; first missing: {', '.join(map(str, missing[:10]))}" if len(missing) else ""
    return ValueError(
        f"The query lacks {len(missing)} of the reference's {n_reference} genes "
        f"({len(missing) / n_reference:.0%}){named}. {advice}"
    )


def _train_only(parameter: nn.Parameter, mask: torch.Tensor) -> None:
    """Make ``parameter`` trainable with the gradient of the entries outside ``mask`` zeroed."""
    mask = mask.to(parameter.dtype)
    parameter.requires_grad_(True)
    parameter.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))


def freeze_for_query(
    module: nn.Module,
    new_columns: dict[str, torch.Tensor],
    new_components: dict[str, torch.Tensor],
    frozen_networks: set[str],
    open_first_layers: set[str],
    trainable_batchnorm: set[str],
    freeze_dropout: bool,
) -> None:
    """Make only the new-category columns (and the layers the flags open) trainable.

    The gradients of the other columns of an injected weight are zeroed by a hook, as in
    scvi-tools' online update; unlike there, the reference categories' own columns are frozen
    too. Frozen batch-norm layers keep their running statistics (momentum 0).

    Parameters
    ----------
    module
        The query's module, already loaded with the extended reference weights.
    new_columns
        Boolean mask of the new-category columns of each injected weight.
    new_components
        Boolean mask of the new mixture components' entries of each component-indexed
        parameter; they are trained even in frozen networks.
    frozen_networks
        Top-level networks that stay entirely fixed.
    open_first_layers
        Networks whose whole first layer is trainable.
    trainable_batchnorm
        Networks whose batch-norm weights are trainable.
    freeze_dropout
        Set every dropout rate to 0.
    """
    module.requires_grad_(False)
    for key, index, linear, _ in injected_linears(module):
        network = key.split(".")[0]
        if network in frozen_networks:
            continue
        if index == 0 and network in open_first_layers:
            linear.requires_grad_(True)
        elif new_columns[key].any():
            _train_only(linear.weight, new_columns[key])
    parameters = dict(module.named_parameters())
    for name, mask in new_components.items():
        _train_only(parameters[name], mask)
    for name, child in module.named_modules():
        network = name.split(".")[0]
        if isinstance(child, nn.BatchNorm1d):
            if network in trainable_batchnorm and network not in frozen_networks:
                child.requires_grad_(True)
            else:
                child.momentum = 0.0
        if freeze_dropout and isinstance(child, nn.Dropout):
            child.p = 0.0


def _check_new_clusters(n_new_clusters: int, attr_dict: dict) -> None:
    """Refuse a negative or non-integer ``n_new_clusters``, or one without a labelled reference."""
    if not isinstance(n_new_clusters, int) or n_new_clusters < 0:
        raise ValueError(f"n_new_clusters must be a non-negative integer, not {n_new_clusters!r}.")
    if attr_dict.get("novelty_calibration_") is None:
        raise ValueError(
            "n_new_clusters needs a reference trained with labels: new components open for "
            "query cells unlike every known type, which the reference's novelty calibration "
            "measures. Train the reference with labels_key, or map the query without "
            "n_new_clusters."
        )


class QueryMappingMixin(ArchesMixin):
    """scArches query mapping whose surgery keeps each covariate's categories in place."""

    _frozen_reference: bool = False
    _maps_query: bool = False
    _n_reference_clusters: int = 0

    @classmethod
    def prepare_query_anndata(
        cls,
        adata: AnnData,
        reference_model: str | BaseModelClass,
        return_reference_var_names: bool = False,
        inplace: bool = False,
        max_missing_fraction: float = 0.2,
    ) -> AnnData | pd.Index | None:
        """Reorder the query's genes to the reference's, adding missing ones as zeros.

        Unlike scvi-tools, the default returns a new AnnData and leaves ``adata`` as it was.

        Parameters
        ----------
        adata
            Query AnnData with gene names in ``var_names``.
        reference_model
            Trained reference model, or the directory it was saved to.
        return_reference_var_names
            Only return the reference's gene names.
        inplace
            Modify ``adata`` in place (its genes, matrices and ``var``) instead of returning
            a new AnnData.
        max_missing_fraction
            Largest fraction of reference genes that may be absent from the query (and filled
            with zeros).

        Returns
        -------
        The prepared query if not ``inplace``, or the reference's gene names.

        Raises
        ------
        ValueError
            If more than ``max_missing_fraction`` of the reference's genes are missing; the
            message says how many and names the first ten.
        """
        reference_genes = ArchesMixin.prepare_query_anndata(
            adata, reference_model, return_reference_var_names=True
        )
        if return_reference_var_names:
            return reference_genes
        missing = reference_genes.difference(adata.var_names, sort=False)
        if len(missing) > max_missing_fraction * len(reference_genes):
            raise _missing_genes_error(
                missing,
                len(reference_genes),
                f"At most max_missing_fraction={max_missing_fraction} of them may be missing.",
            )
        query = adata if inplace else adata.copy()
        ArchesMixin.prepare_query_anndata(query, reference_model, inplace=True)
        return None if inplace else query

    @classmethod
    def prepare_query_mudata(cls, *args, **kwargs) -> None:
        """Refused: c*GMΔVÆ models an AnnData; use :meth:`prepare_query_anndata`.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(
            "c*GMΔVÆ is set up with an AnnData, not a MuData; prepare the query's AnnData with "
            "CGMDVAE.prepare_query_anndata."
        )

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model: str | BaseModelClass,
        inplace_subset_query_vars: bool = False,
        accelerator: str = "auto",
        device: int | str = "auto",
        unfrozen: bool = False,
        freeze_dropout: bool = False,
        freeze_expression: bool = True,
        freeze_decoder_first_layer: bool = True,
        freeze_batchnorm_encoder: bool = True,
        freeze_batchnorm_decoder: bool = False,
        freeze_prior: bool = True,
        freeze_classifier: bool = True,
        use_query_labels: bool = False,
        n_new_clusters: int = 0,
    ):
        """Build a query model from a reference by architecture surgery (scArches).

        The query is registered with the reference's setup: new categories of the condition
        and of the categorical covariates are appended to the reference's, every query cell is
        unlabelled unless ``use_query_labels``, and every covariate-injected layer gets
        columns for the new categories, initialised at the mean of the reference categories'
        columns. By default only these columns are trained (in the encoder and the decoder);
        everything the reference learnt stays fixed, including the mixture prior and the
        cluster and Dirichlet heads. Training a query model uses no
        weight decay unless ``plan_kwargs`` asks for it, since Adam's weight decay would move
        frozen weights.

        Then train with ``query_model.train(...)`` and write the query's results with
        ``query_model.write_results(adata)``, under the same keys as for the reference; see
        :mod:`scgmdvae.model._query_mapping` for a joint-UMAP recipe. As in scvi-tools, the
        module is left in evaluation mode, so query training uses the reference's batch-norm
        statistics and no dropout.

        Parameters
        ----------
        adata
            Query AnnData with the reference's genes in the reference's order (see
            :meth:`prepare_query_anndata`) and the reference's ``.obs`` covariate columns.
        reference_model
            Trained reference model, or the directory it was saved to.
        inplace_subset_query_vars
            Subset and reorder the query's genes to the reference's in place.
        accelerator, device
            Where to put the query model.
        unfrozen
            Train every parameter (the other ``freeze_*`` flags are ignored).
        freeze_dropout
            Set every dropout rate to 0.
        freeze_expression
            Keep the encoder's first layer fixed except the new columns; ``False`` trains it.
        freeze_decoder_first_layer
            Keep the decoder's first layer fixed except the new columns; ``False`` trains it.
        freeze_batchnorm_encoder
            Keep the batch norms of the encoder and heads fixed (weights and statistics).
        freeze_batchnorm_decoder
            Keep the batch norms of the decoder fixed.
        freeze_prior
            Keep the mixture prior network ``p(z|w,y,c)`` entirely fixed.
        freeze_classifier
            Keep the cluster head ``q(y|z,c)`` and the Dirichlet head ``q(d|z,c)`` entirely fixed.
        use_query_labels
            Let query cells whose label (in the reference's ``labels_key`` column) the
            reference knows supervise query training; labels it does not know, and missing
            values, stay unlabelled. Off by default, so that labels kept in the query for
            evaluation are never used for training. The query's column is read, never changed.
        n_new_clusters
            Mixture components to add for query cells of types the reference lacks (needs a
            reference trained with labels). They are trained even where the reference is
            frozen, and ``train`` opens them: after a third of the epochs, the query's latent
            means are partitioned into Leiden communities, and communities whose median novelty
            p-value (:meth:`get_novelty_scores`) is below 0.05 guide the new components, and
            every other cell its most probable reference component, for the remaining epochs
            (as in :meth:`train` with ``mixture_init``, without a free phase: left free, a new
            component, the only one that still learns, can take cells of a known type that
            the frozen reference fits less well in the query's condition). Their cells are
            predicted under the new components' names (``"<K>"``, …).

        Returns
        -------
        The query model, untrained.

        Raises
        ------
        ValueError
            If the query's genes differ from the reference's, if the reference registered
            neither a condition nor a categorical covariate (nothing to extend), or if the
            flags leave no parameter to train.
        """
        attr_dict, reference_genes, reference_state, _ = _get_loaded_data(
            reference_model, device="cpu"
        )
        registry = attr_dict.pop("registry_")
        if n_new_clusters:
            _check_new_clusters(n_new_clusters, attr_dict)
        if registry.get(_MODEL_NAME_KEY, cls.__name__) != cls.__name__:
            raise ValueError(
                f"The reference is a {registry[_MODEL_NAME_KEY]} model, not a {cls.__name__}."
            )
        setup_args = registry[_SETUP_ARGS_KEY]
        if not unfrozen and not (
            setup_args["condition_key"] or setup_args["categorical_covariate_keys"]
        ):
            raise ValueError(
                "The reference was set up without condition_key and without "
                "categorical_covariate_keys, so there is no covariate to extend to the "
                "query's conditions. Train the reference with a condition_key, or pass "
                "unfrozen=True to fine-tune every weight."
            )
        query_genes = adata.var_names
        if not inplace_subset_query_vars and not query_genes.equals(pd.Index(reference_genes)):
            raise _missing_genes_error(
                pd.Index(reference_genes).difference(query_genes, sort=False),
                len(reference_genes),
                "The query needs the reference's genes in the reference's order: run "
                "CGMDVAE.prepare_query_anndata(query, reference_model) first.",
            )
        if inplace_subset_query_vars:
            adata._inplace_subset_var(reference_genes)
        cls.setup_anndata(
            adata,
            source_registry=registry,
            extend_categories=True,
            use_labels=use_query_labels,
            **setup_args,
        )
        n_reference_clusters = reference_state["prior_concentration"].shape[0]
        if n_new_clusters:
            init_params = attr_dict["init_params_"] = deepcopy(attr_dict["init_params_"])
            init_params["non_kwargs"]["n_clusters"] = n_reference_clusters + n_new_clusters
        model = _initialize_model(cls, adata, registry, attr_dict, None)
        _, _, torch_device = parse_device_args(accelerator, device, return_device="torch")
        model.to_device(torch_device)
        reference_state, new_components = model.module.with_new_components(reference_state)
        state, new_columns = extend_state_dict(
            reference_state,
            model.module,
            registry_category_counts(registry),
            registry_category_counts(model.registry_),
        )
        model.module.load_state_dict(state)
        if not unfrozen:
            flags = {
                "prior_network": freeze_prior,
                "cluster_head": freeze_classifier,
                "dirichlet_head": freeze_classifier,
            }
            first_layer_flags = {
                "encoder": freeze_expression,
                "decoder": freeze_decoder_first_layer,
            }
            freeze_for_query(
                model.module,
                new_columns,
                new_components,
                frozen_networks={name for name, frozen in flags.items() if frozen},
                open_first_layers={n for n, frozen in first_layer_flags.items() if not frozen},
                trainable_batchnorm={
                    *(() if freeze_batchnorm_encoder else INFERENCE_NETWORKS),
                    *(() if freeze_batchnorm_decoder else GENERATIVE_NETWORKS),
                },
                freeze_dropout=freeze_dropout,
            )
            if not any(p.requires_grad for p in model.module.parameters()):
                raise ValueError(
                    "The query adds no category to the reference's condition or categorical "
                    "covariates, so no parameter is left to train. Use the reference model "
                    "on the query directly, or unfreeze parts with the freeze_* flags."
                )
            model._frozen_reference = True
            model.module.update_global_weights = not freeze_prior or n_new_clusters > 0
        model._maps_query = True
        model._n_reference_clusters = n_reference_clusters
        model.module.eval()
        model.is_trained_ = False
        return model

    def _query_plan_kwargs(self) -> dict:
        """Training-plan defaults: no weight decay when reference weights are frozen."""
        return {"weight_decay": 0.0} if self._frozen_reference else {}
