"""Errors that the CLI turns into exit codes.

`UserError` means bad input (config, data, arguments): exit 2 with a one-paragraph message that
names the file, the field path or row, and what was expected. Anything else is a failure while
running (exit 1).
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user: exit code 2, no traceback."""

    def __init__(self, message: str, *, source: str | Path | None = None, where: str | None = None):
        self.message = message
        self.source = str(source) if source is not None else None
        self.where = where
        super().__init__(self.render())

    def render(self) -> str:
        """The one-paragraph message shown to the user."""
        head = ""
        if self.source:
            head = self.source + (f", {self.where}" if self.where else "") + ": "
        elif self.where:
            head = f"{self.where}: "
        return head + self.message


class ConfigError(UserError):
    """A config file or override is invalid."""


class DataError(UserError):
    """A dataset file (CSV, image, COCO JSON, ...) is missing or invalid."""
