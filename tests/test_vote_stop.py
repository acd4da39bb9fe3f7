from types import SimpleNamespace

import numpy as np
import torch

from scgmdvae.model._vote_stop import StopWhenVoteSettles


def test_the_free_phase_stops_at_the_first_epoch_whose_vote_is_the_one_before():
    guide = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    epochs = iter(
        [
            [0, 0, 0, 1, 1, 1, 2, 2, 2],  # epoch 1: every cluster in its own component
            [0, 0, 1, 0, 0, 0, 2, 2, 2],  # epoch 2: cluster 1 moves into component 0
            [0, 1, 0, 0, 0, 1, 2, 2, 3],  # epoch 3: single cells move, the vote stays
            [5, 5, 5, 5, 5, 5, 5, 5, 5],  # never reached
        ]
    )
    module = torch.nn.Linear(1, 1)

    def components():
        module.eval()
        return np.array(next(epochs))

    stop = StopWhenVoteSettles(guide, components)
    trainer = SimpleNamespace(should_stop=False)
    for epoch in range(1, 4):
        assert not trainer.should_stop
        module.train()
        stop.on_train_epoch_end(trainer, module)
        assert stop.n_epochs == epoch
        assert module.training
    assert trainer.should_stop
