"""Pretraining: SAIP and baseline methods driven by one trainer (``trainer.py``)."""
