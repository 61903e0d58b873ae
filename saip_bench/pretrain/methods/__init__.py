"""One module per pretraining method; each registers a ``PretrainMethod`` subclass in ``METHODS``."""
