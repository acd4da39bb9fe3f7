"""Architecture surgery for query mapping: extend the one-hot covariate columns of a module.

Every :class:`~scvi.nn.FCLayers` with ``inject_covariates=True`` concatenates the one-hot
covariates to the input of each of its layers, so the weight of each injected
:class:`~torch.nn.Linear` has the column layout
``[inputs, one-hot(condition), one-hot(covariate 1), …]``. A covariate with a single category
gets no columns. When the query adds categories, each covariate's block grows in place; the
reference's categories keep their own columns and the new ones are inserted right after them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from scvi import REGISTRY_KEYS
from scvi.nn import FCLayers
from torch import nn


def one_hot_widths(n_cats: Sequence[int]) -> list[int]:
    """Columns that :class:`~scvi.nn.FCLayers` gives each covariate (none for one category)."""
    return [n if n > 1 else 0 for n in n_cats]


def registry_category_counts(registry: Mapping) -> list[int]:
    """Categories of the condition and of each categorical covariate, in injection order."""
    fields = registry["field_registries"]
    n_batch = len(fields[REGISTRY_KEYS.BATCH_KEY]["state_registry"]["categorical_mapping"])
    cat_state = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
    return [n_batch, *cat_state.get("n_cats_per_key", [])]


def extend_covariate_columns(
    weight: torch.Tensor, ref_cats: Sequence[int], new_cats: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Widen an injected layer's weight from the reference's categories to the query's.

    Parameters
    ----------
    weight
        Reference weight, ``(n_out, n_inputs + Σ one-hot widths of ref_cats)``.
    ref_cats
        Categories of each covariate in the reference.
    new_cats
        Categories of each covariate after the query's were appended (``>= ref_cats``).

    Returns
    -------
    The extended weight and a boolean mask of its columns that belong to new categories. A new
    category's column starts at the mean of the reference categories' columns of the same
    covariate (zero when the reference had a single category and so no column), that is, the
    new condition starts as the average known one.
    """
    ref_widths, new_widths = one_hot_widths(ref_cats), one_hot_widths(new_cats)
    n_inputs = weight.shape[1] - sum(ref_widths)
    blocks, is_new = [weight[:, :n_inputs]], [torch.zeros(n_inputs, dtype=torch.bool)]
    start = n_inputs
    for n_ref, ref_width, new_width in zip(ref_cats, ref_widths, new_widths, strict=True):
        kept = weight[:, start : start + ref_width]
        start += ref_width
        if new_width == 0:
            continue
        if ref_width == 0:
            kept = weight.new_zeros(weight.shape[0], n_ref)
        n_added = new_width - n_ref
        blocks += [kept, kept.mean(dim=1, keepdim=True).expand(-1, n_added)]
        is_new += [torch.zeros(n_ref, dtype=torch.bool), torch.ones(n_added, dtype=torch.bool)]
    return torch.cat(blocks, dim=1), torch.cat(is_new)


def injected_linears(module: nn.Module) -> Iterator[tuple[str, int, nn.Linear, FCLayers]]:
    """Yield ``(weight key, layer index, Linear, FCLayers)`` of every covariate-injected layer."""
    for prefix, fc in module.named_modules():
        if not isinstance(fc, FCLayers) or not fc.n_cat_list:
            continue
        for index, (layer_name, layer) in enumerate(fc.fc_layers.named_children()):
            if fc.inject_into_layer(index):
                yield f"{prefix}.fc_layers.{layer_name}.0.weight", index, layer[0], fc


def extend_state_dict(
    reference_state: Mapping[str, torch.Tensor],
    module: nn.Module,
    ref_cats: Sequence[int],
    new_cats: Sequence[int],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Map a reference state dict onto ``module``, whose covariates have more categories.

    Returns
    -------
    The state dict to load into ``module`` and, for each injected weight, the boolean mask of
    its new-category columns.

    Raises
    ------
    ValueError
        If a tensor other than an injected weight changed shape, or an injected weight does not
        have the layout ``[inputs, one-hot covariates]`` with the given category counts.
    """
    target = module.state_dict()
    state = {key: value.detach().clone() for key, value in reference_state.items()}
    new_columns = {}
    for key, _, linear, fc in injected_linears(module):
        if fc.n_cat_list != one_hot_widths(new_cats):
            raise ValueError(
                f"{key} injects covariates with widths {fc.n_cat_list}, expected "
                f"{one_hot_widths(new_cats)}."
            )
        weight, is_new = extend_covariate_columns(state[key], ref_cats, new_cats)
        if weight.shape != linear.weight.shape:
            raise ValueError(
                f"Cannot extend {key} of shape {tuple(state[key].shape)} to "
                f"{tuple(linear.weight.shape)} with categories {list(ref_cats)} -> "
                f"{list(new_cats)}."
            )
        state[key] = weight.to(target[key].dtype)
        new_columns[key] = is_new
    mismatched = [key for key, value in state.items() if value.shape != target[key].shape]
    if mismatched:
        raise ValueError(f"Reference tensors {mismatched} do not fit the query model.")
    return state, new_columns
