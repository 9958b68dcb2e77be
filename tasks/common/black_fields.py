"""The config fields of the black-image policy (`tasks.common.images.without_black`), one
definition for every task that reads 2-D image files (kept apart from images.py, which imports
OpenCV, so configs stay light)."""

from __future__ import annotations

from typing import Any

from pydantic import Field


def black_images_field(allowed: str, named_by: str) -> Any:
    """`data.black_images`: `allowed` says what dark surround is fine, `named_by` how an error
    names the images."""
    return Field(
        "error",
        description=f"Images with (almost) nothing brighter than `black_threshold` ({allowed}): "
        f"error (exit 2 naming {named_by}) or skip (leave them out and count them).",
    )


def black_threshold_field() -> Any:
    """`data.black_threshold`: the pixel level that counts as content."""
    return Field(
        10,
        ge=0,
        le=255,
        description="Pixel level (0-255) that counts as content: an image with content in less "
        "than 1% of its area after a 5x5 median filter is black.",
    )
