"""Reusable pretraining pieces shared by SAIP and the baselines.

DINO head/loss, EMA teacher, MAE decoder and masking, ViT token utilities.
"""
