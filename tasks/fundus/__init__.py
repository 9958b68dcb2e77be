"""Glaucoma classification from fundus photographs (seed 002)."""
