"""Liver-tumour detection in ultrasound (seed 000)."""
