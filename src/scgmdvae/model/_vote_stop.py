"""End a free phase once the vote of the guide clusters stops changing."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from ._component_merging import voted_components

logger = logging.getLogger(__name__)


class StopWhenVoteSettles(Callback):
    """Stop training at the end of the first epoch whose vote is the one of the epoch before.

    The free phase after a guided phase is there to let whole guide clusters change their
    component (two halves of a cell type combine in the first free epochs). Once no cluster
    changes its majority component (:func:`voted_components`) from one epoch to the next, more
    free training only lets the Gaussians drift along curved manifolds, and a late drift can
    carry one cluster's majority into another's component.

    Parameters
    ----------
    guide
        Guide cluster code of each cell, in the order of ``components``'s cells.
    components
        Returns each cell's most probable component under the current parameters; it may
        switch the module to evaluation mode, which is undone after each call.

    Attributes
    ----------
    n_epochs
        Number of epochs trained so far.
    """

    def __init__(self, guide: np.ndarray, components: Callable[[], np.ndarray]) -> None:
        self.guide = np.asarray(guide)
        self.components = components
        self.n_epochs = 0
        self._previous_vote: np.ndarray | None = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.n_epochs += 1
        was_training = pl_module.training
        vote = voted_components(self.guide, self.components())
        pl_module.train(was_training)
        if self._previous_vote is not None and np.array_equal(vote, self._previous_vote):
            logger.info("Free phase stopped after %d epochs: the vote settled.", self.n_epochs)
            trainer.should_stop = True
        self._previous_vote = vote
