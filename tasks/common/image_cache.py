"""A content-addressed, on-disk cache of decoded and preprocessed images, shared by every trial
and fold of a sweep (and by later sweeps with the same files and settings).

One entry is ``<key>.npy`` (``[N, C, H, W]`` uint8, memory-mapped when read) and ``<key>.json``
(paths in row order, shape, settings), where ``key`` is the sha256 of the sorted paths with their
size and ``mtime_ns`` and of the preprocessing settings: editing or replacing a file, or
changing a setting, gives a new key. The JSON is renamed into place last, so it marks a complete
entry. Builders of one key serialise on an ``flock`` of ``<key>.lock``: the first builds, the
others wait and then read its result. Old entries are not deleted (`medsweep` never deletes
data it did not write in this run); remove the cache folder to reclaim space.

The folder is ``$MEDSWEEP_CACHE/<family>`` (default ``~/.cache/medsweep/<family>``); on a
cluster, a folder every node sees lets the nodes share it (or each node builds its own).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestrator.errors import DataError

__all__ = ["CacheEntry", "ImageCache", "cache_folder", "settings_hash"]


def cache_folder(family: str, override: str | None = None) -> Path:
    """Where a task family keeps its image cache."""
    if override:
        return Path(override).expanduser()
    base = os.environ.get("MEDSWEEP_CACHE") or "~/.cache/medsweep"
    return Path(base).expanduser() / family


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of preprocessing settings (part of every cache key)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CacheEntry:
    """One complete cache entry: its ``.npy`` file and the image path of every row."""

    file: Path
    paths: list[str]

    def open(self) -> np.ndarray:
        """The images ``[N, C, H, W]`` uint8, memory-mapped read-only."""
        return np.load(self.file, mmap_mode="r")

    def rows(self, paths: Sequence[str | Path]) -> NDArray[np.int64]:
        """Row of each of ``paths``; KeyError names the first path not in the entry."""
        index = {p: i for i, p in enumerate(self.paths)}
        return np.array([index[str(Path(p))] for p in paths], dtype=np.int64)


class ImageCache:
    """The cache of one preprocessing (see the module docstring).

    Args:
        settings: a hash of the preprocessing that ``fn`` applies (e.g. `settings_hash`).
    """

    def __init__(self, settings: str) -> None:
        self.settings = settings

    def key(self, paths: Sequence[str | Path]) -> str:
        """The cache key of ``paths`` (order-independent) under these settings."""
        h = hashlib.sha256(f"medsweep-preprocess\0{self.settings}\0".encode())
        for p in sorted(str(Path(p)) for p in paths):
            try:
                st = os.stat(p)
            except OSError as exc:
                raise DataError(f"cannot read image file: {exc.strerror}", source=p) from exc
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return h.hexdigest()

    def get_or_build(
        self,
        paths: Sequence[str | Path],
        fn: Callable[[str], np.ndarray],
        cache_dir: str | Path,
        workers: int = 1,
    ) -> np.ndarray:
        """The preprocessed images of ``paths`` (row i = ``paths[i]``), built at most once.

        Args:
            paths: image files.
            fn: decodes and preprocesses one file into ``(3, S, S)`` uint8 (same S for all).
            cache_dir: folder of the cache (created).
            workers: threads calling ``fn`` while building (decoders release the GIL).

        Returns:
            A read-only ``np.memmap`` ``[N, C, H, W]``; when a cached entry lists the same
            files in another order, an in-memory copy in the order of ``paths``.
        """
        entry = self.ensure(paths, fn, cache_dir, workers)
        data = entry.open()
        wanted = [str(Path(p)) for p in paths]
        if entry.paths == wanted:
            return data
        return np.asarray(data[entry.rows(wanted)])

    def ensure(
        self,
        paths: Sequence[str | Path],
        fn: Callable[[str], np.ndarray],
        cache_dir: str | Path,
        workers: int = 1,
    ) -> CacheEntry:
        """The cache entry of ``paths`` (built now under a lock if absent); nothing is loaded.

        Use this rather than :meth:`get_or_build` to index rows by path without copying.
        """
        if len(paths) == 0:
            raise ValueError("no image paths to cache")
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        key = self.key(paths)
        found = self._entry(folder, key)
        if found is not None:
            return found
        with self._locked(folder / f"{key}.lock"):
            found = self._entry(folder, key)  # another process built it meanwhile
            if found is None:
                self._build(folder, key, paths, fn, workers)
                found = self._entry(folder, key)
        if found is None:  # pragma: no cover - only if the files vanish under us
            raise RuntimeError(f"cache entry {key} disappeared from {folder}")
        return found

    @staticmethod
    @contextmanager
    def _locked(lock_path: Path) -> Iterator[None]:
        with lock_path.open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _entry(folder: Path, key: str) -> CacheEntry | None:
        index_path, data_path = folder / f"{key}.json", folder / f"{key}.npy"
        try:
            index: dict[str, Any] = json.loads(index_path.read_text(encoding="utf-8"))
            data = np.load(data_path, mmap_mode="r")
        except (OSError, ValueError):
            return None  # absent or half-deleted: (re)build under the lock
        stored = index.get("paths")
        if list(data.shape) != index.get("shape") or not isinstance(stored, list):
            return None  # not an entry this code wrote: rebuild
        return CacheEntry(data_path, [str(p) for p in stored])

    def _build(
        self,
        folder: Path,
        key: str,
        paths: Sequence[str | Path],
        fn: Callable[[str], np.ndarray],
        workers: int,
    ) -> None:
        names = [str(Path(p)) for p in paths]
        first = self._checked(fn(names[0]), names[0], None)
        shape = (len(names), *first.shape)
        tmp = folder / f".{key}.{uuid.uuid4().hex}.tmp.npy"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            out[0] = first
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for i, (name, image) in enumerate(
                    zip(names[1:], pool.map(fn, names[1:]), strict=True), start=1
                ):
                    out[i] = self._checked(image, name, first.shape)
            out.flush()
            del out
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            index = {"key": key, "settings": self.settings, "shape": list(shape), "paths": names}
            tmp_index = tmp.with_suffix(".json")
            with tmp_index.open("w", encoding="utf-8") as fh:
                json.dump(index, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / f"{key}.npy")
            os.replace(tmp_index, folder / f"{key}.json")  # last: marks the entry complete
            _fsync_dir(folder)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".json").unlink(missing_ok=True)

    @staticmethod
    def _checked(image: np.ndarray, path: str, shape: tuple[int, ...] | None) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"fn({path!r}) must return (C, H, W) uint8, got {image.shape}")
        if shape is not None and image.shape != shape:
            raise ValueError(f"fn({path!r}) returned {image.shape}, the first image {shape}")
        return image
