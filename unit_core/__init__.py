"""UNIT: two VAE-GANs with a shared latent space (Liu, Breuel, Kautz, NIPS 2017).

The model, its losses, trainer, checkpoints and translation. Nothing here knows of
Prefect, Ray or MLflow: they call into this package.
"""
