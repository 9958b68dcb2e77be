"""Unsupervised anomaly detection from normal cases only (seed 001: Glow, PET-from-CT U-Net)."""
