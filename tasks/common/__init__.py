"""Helpers shared by all task families: metrics, data readers, synthetic-data utilities."""
