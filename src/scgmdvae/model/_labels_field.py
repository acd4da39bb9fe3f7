"""The labels field: reads the user's labels column, never writes it.

scvi-tools' :class:`~scvi.data.fields.LabelsWithUnlabeledObsField` needs a column without missing
values, and a query whose labels the reference does not know had to be relabelled in place. This
field computes the codes from the user's column and writes only scvi-tools' own code column
(``obs["_scvi_labels"]``) and the labels those codes stand for (``obs["_scgmdvae_labels"]``,
which scvi-tools' semi-supervised data loading reads): missing values, the unlabelled category
and (in a transfer) labels the source registry does not know are unlabelled, and a transfer may
leave every cell unlabelled.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data.fields import LabelsWithUnlabeledObsField

logger = logging.getLogger(__name__)

LABELS_COLUMN = "_scgmdvae_labels"
"""``.obs`` column of the labels as registered (unlabelled cells under the unlabelled category)."""


class PartialLabelsObsField(LabelsWithUnlabeledObsField):
    """Labels with unlabelled cells, read from ``adata.obs[labels_key]`` without changing it.

    Parameters
    ----------
    registry_key
        Key to register the field under in the data registry.
    obs_key
        ``.obs`` column of the labels.
    unlabeled_category
        Value of the column that marks unlabelled cells; missing values are unlabelled too.
    """

    def _write_codes(self, adata: AnnData, labels: pd.Series, mapping: np.ndarray) -> dict:
        """Write the codes of ``labels`` in ``mapping``, and the labels they stand for.

        Labels not in ``mapping`` get the last code, the unlabelled category's. scvi-tools'
        semi-supervised splitter and data loader read the labels from the state registry's
        original column and compare them with the unlabelled category, so that column must
        hold the labels as the codes have them: it is :data:`LABELS_COLUMN`, never the user's.

        Returns
        -------
        The state registry.
        """
        codes = pd.Index(mapping).get_indexer(labels.to_numpy())
        codes[codes < 0] = len(mapping) - 1
        adata.obs[self.attr_key] = codes.astype(np.int64)
        adata.obs[LABELS_COLUMN] = pd.Categorical.from_codes(
            codes, pd.Index(mapping, dtype=object)
        )
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: LABELS_COLUMN,
            self.UNLABELED_CATEGORY: self._unlabeled_category,
        }

    def _labels(self, adata: AnnData) -> pd.Series:
        """Return the labels as objects, missing values replaced by the unlabelled category."""
        labels = adata.obs[self._original_attr_key].astype(object)
        return labels.where(labels.notna(), self._unlabeled_category)

    def register_field(self, adata: AnnData) -> dict:
        """Register the labels, then the unlabelled category as the last one.

        The labels are ordered as scvi-tools orders categories: a categorical column keeps its
        order (unused categories dropped), any other column is sorted.
        """
        self.validate_field(adata)
        column = adata.obs[self._original_attr_key]
        labelled = column.notna() & (column.astype(object) != self._unlabeled_category)
        categories = column[labelled].astype("category").cat.remove_unused_categories()
        mapping = np.asarray([*categories.cat.categories, self._unlabeled_category], dtype=object)
        return self._write_codes(adata, self._labels(adata), mapping)

    def transfer_field(
        self,
        state_registry: dict,
        adata_target: AnnData,
        use_labels: bool = True,
        **kwargs,
    ) -> dict:
        """Code the target's labels with the source's categories.

        Labels the source does not know, and every label when the target has no labels
        column or ``use_labels`` is ``False``, are unlabelled; the source's categories are kept.
        """
        mapping = np.asarray(state_registry[self.CATEGORICAL_MAPPING_KEY], dtype=object)
        if not use_labels or self._original_attr_key not in adata_target.obs:
            labels = pd.Series(self._unlabeled_category, index=adata_target.obs_names)
            return self._write_codes(adata_target, labels, mapping)
        labels = self._labels(adata_target)
        unknown = ~labels.isin(mapping)
        if unknown.any():
            logger.warning(
                "%d cells have labels in adata.obs[%r] that the model does not know (%s); they "
                "are treated as unlabelled. The column itself is left as it is.",
                int(unknown.sum()),
                self._original_attr_key,
                ", ".join(map(str, labels[unknown].unique()[:10])),
            )
        return self._write_codes(adata_target, labels, mapping)
