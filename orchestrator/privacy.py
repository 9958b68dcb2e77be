"""Keeping patient ids and credentials out of everything medsweep writes or prints.

* Patient ids in per-case tables (predictions, test predictions, pseudo-labels) are replaced by a
  keyed hash (HMAC-SHA256 with a per-store secret), so grouped evaluation still works but the raw
  id cannot be recovered from the store. The secret lives outside the store folder, in
  ``$MEDSWEEP_SECRETS_DIR`` (default ``~/.medsweep/secrets``), one file per store.
* Image paths in those tables become relative to the task's data root.
* Credentials in URLs (``postgresql://user:password@host/db``) are redacted wherever a config or
  a message is stored or printed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
REDACTED = "***"
PATH_COLUMNS = ("path", "case", "mask", "file_name")


def redact(text: str) -> str:
    """`scheme://user:secret@host` -> `scheme://user:***@host` everywhere in `text`."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)


def strip_password(url: str) -> str:
    """`scheme://user:secret@host` -> `scheme://user@host` (libpq then reads PGPASSWORD or
    ~/.pgpass)."""
    return _URL_PASSWORD.sub(lambda m: m.group("head")[:-1], url)


# Real URLs of the storages this process opened, by their redacted form (never written anywhere).
_OPENED: dict[str, str] = {}


class SecretURL(str):
    """A URL that pickles as its redacted form. Ray Tune pickles the searcher, and so the Optuna
    storage and its URL, into the sweep's `tune/` folder; this keeps the password out of it. A
    resumed sweep opens its storage again (registering the real URL) before Tune unpickles the
    searcher; unknown URLs come back without their password."""

    def __new__(cls, url: str) -> SecretURL:
        _OPENED[redact(url)] = str(url)
        return super().__new__(cls, url)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_unpickle_url, (redact(str(self)),))


def _unpickle_url(redacted: str) -> str:
    real = _OPENED.get(redacted)
    return SecretURL(real) if real is not None else strip_password(redacted)


def redact_tree(value: Any) -> Any:
    """`redact` applied to every string of a nested config."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value


def secrets_dir() -> Path:
    return Path(os.environ.get("MEDSWEEP_SECRETS_DIR", "~/.medsweep/secrets")).expanduser()


def store_secret(store_root: str | Path) -> bytes:
    """The store's pseudonymisation key, created on first use (mode 0600, outside the store)."""
    key = hashlib.sha256(str(Path(store_root).resolve()).encode()).hexdigest()[:16]
    path = secrets_dir() / f"store-{key}.key"
    if path.is_file():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value.hex())
    return value


def pseudonym(secret: bytes, raw: str) -> str:
    return "P-" + hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()[:12]


def table_filter(
    settings: Mapping[str, Any], secret: bytes | None, root: Path | None
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function applied to every per-case table before it is written."""
    pseudonymise = bool(settings.get("pseudonymise", True)) and secret is not None
    relative = bool(settings.get("relative_paths", True)) and root is not None

    import pandas as pd

    def apply(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        if pseudonymise and "patient_id" in out.columns:
            assert secret is not None
            out["patient_id"] = [
                v if v is None or v != v else pseudonym(secret, str(v)) for v in out["patient_id"]
            ]
        if relative:
            assert root is not None
            for column in PATH_COLUMNS:
                if column in out.columns and not pd.api.types.is_numeric_dtype(out[column]):
                    out[column] = [_relative(v, root) for v in out[column]]
        return out

    return apply


def _relative(value: Any, root: Path) -> Any:
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    try:
        return os.path.relpath(value, root)
    except ValueError:  # another drive (Windows)
        return value
