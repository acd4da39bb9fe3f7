"""Keys that :meth:`scgmdvae.CGMDVAE.write_results` writes into an AnnData."""

from typing import NamedTuple


class _ResultKeys(NamedTuple):
    LATENT_Z: str = "X_cgmdvae"
    LATENT_W: str = "X_cgmdvae_w"
    CLUSTER: str = "cgmdvae_cluster"
    CLUSTER_PROBS: str = "cgmdvae_cluster_probs"
    CLUSTER_CONFIDENCE: str = "cgmdvae_cluster_confidence"
    PREDICTION: str = "cgmdvae_prediction"
    PREDICTION_CONFIDENCE: str = "cgmdvae_prediction_confidence"
    NOVELTY_SCORE: str = "cgmdvae_novelty_score"
    NOVELTY_PVALUE: str = "cgmdvae_novelty_pvalue"
    UNS: str = "cgmdvae"


RESULT_KEYS = _ResultKeys()
