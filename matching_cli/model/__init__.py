"""The pair model: network, training loop, checkpoints, the saved-model format, metrics, figures."""
