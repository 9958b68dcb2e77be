"""Attention Branch Network with lung-mask supervision and a dynamic loss weight (seed 003)."""
