"""timm backbones for seed 002: input sizes, local ImageNet weights, and the classifier.

Seed 002 resizes to 512 px "or, for models that cannot take 512, the model's own size" (DeiT takes
224 only: its positional embeddings fix the token grid). :func:`resolve_image_size` encodes that
rule from timm's ``pretrained_cfg``, without building the model.

Nothing is downloaded silently: :func:`resolve_pretrained` finds the weights file on disk (an
explicit file, a local weights folder, the Hugging Face or torch hub cache) and otherwise raises
a :class:`DataError` naming the exact file to place, unless the hub is explicitly allowed
(``HF_HUB_OFFLINE=0``) and reachable. :func:`create_classifier` checks that the file really
fitted the model: timm loads non-strictly when the class count differs, which would otherwise
leave a mismatched backbone randomly initialised without a word.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlparse

from orchestrator.errors import DataError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "create_classifier",
    "fixed_input_size",
    "native_input_size",
    "resolve_image_size",
    "resolve_pretrained",
]

WEIGHTS_ENV = "MEDSWEEP_WEIGHTS"  # local weights folder(s), os.pathsep-separated
HUB_TIMEOUT_S = 2.0
_MISSING = re.compile(r"Missing keys \((.*)\) discovered")


def _cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config of ``name`` as a dict (from the registry; else a meta model)."""
    import timm

    if not timm.is_model(name):
        stem = name.split(".")[0].split("_")[0]
        close = timm.list_models(f"*{stem}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise DataError(f"unknown timm model {name!r}{hint}", where="field model.backbone")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None:
        return cfg.to_dict()
    import torch

    with torch.device("meta"):  # no memory, no init cost: we only read attributes
        model = timm.create_model(name, pretrained=False)
    out = dict(getattr(model, "pretrained_cfg", {}) or {})
    embed = getattr(model, "patch_embed", None)
    if embed is not None and not getattr(model, "dynamic_img_size", False):
        size = getattr(embed, "img_size", None)
        if size is not None and getattr(embed, "strict_img_size", True):
            out.setdefault("input_size", (3, *size))
            out["fixed_input_size"] = True
    return out


def native_input_size(name: str) -> int | None:
    """The side of timm's default input (``pretrained_cfg['input_size']``), e.g. 224 or 528.

    Raises:
        DataError: ``name`` is not a timm model (``field model.backbone``).
    """
    size = _cfg(name).get("input_size")
    return int(max(size[-2:])) if size else None


def fixed_input_size(name: str) -> int | None:
    """The only side the model accepts (ViT/DeiT/Swin with fixed positional grids), else None.

    Read from timm's ``pretrained_cfg['fixed_input_size']``; CNNs (EfficientNet, ResNeXt,
    ResNeSt) take any size and give None.
    """
    cfg = _cfg(name)
    if not cfg.get("fixed_input_size"):
        return None
    size = cfg.get("input_size")
    return int(max(size[-2:])) if size else None


def resolve_image_size(name: str, requested: int | Literal["auto"]) -> int:
    """The training image side: ``"auto"`` -> the native size; an int is checked, not changed.

    Raises:
        DataError: (``field data.image_size``) a fixed-size model asked for another size, or
            ``"auto"`` for a model whose native size timm does not know.
    """
    fixed = fixed_input_size(name)
    if requested == "auto":
        native = fixed or native_input_size(name)
        if native is None:
            raise DataError(
                f"timm does not state a native input size for {name!r}; set an explicit size",
                where="field data.image_size",
            )
        return native
    if fixed is not None and requested != fixed:
        raise DataError(
            f"{name} takes {fixed} x {fixed} px images only (fixed positional embeddings), "
            f"got {requested}; set data.image_size: {fixed} or auto",
            where="field data.image_size",
        )
    return int(requested)


def _weight_dirs(cache_dirs: Sequence[str] | None) -> list[Path]:
    env = [p for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in [*(cache_dirs or []), *env]]


def _local_names(name: str, cfg: dict[str, Any]) -> list[str]:
    arch, tag = cfg.get("architecture") or name.split(".")[0], cfg.get("tag")
    names = [name, arch, f"{arch}.{tag}" if tag else arch]
    return list(dict.fromkeys(names))  # unique, in order


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join("~", ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _cache_candidates(cfg: dict[str, Any]) -> list[Path]:
    """Weights timm itself would have cached: the Hugging Face hub, then torch hub."""
    found: list[Path] = []
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        snapshots = _hub_cache() / f"models--{hub_id.replace('/', '--')}" / "snapshots"
        for fname in ("model.safetensors", "pytorch_model.bin"):
            found += sorted(snapshots.glob(f"*/{fname}"), key=lambda p: p.stat().st_mtime)[::-1]
    url = cfg.get("url")
    if url:
        torch_home = os.environ.get("TORCH_HOME") or os.path.join("~", ".cache", "torch")
        found.append(Path(torch_home).expanduser() / "hub" / "checkpoints" / Path(url).name)
    return found


def _hub_reachable() -> bool:
    """Whether the hub answers a TCP connect within HUB_TIMEOUT_S (DNS included: a thread)."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host or "huggingface.co", 443), HUB_TIMEOUT_S):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S + 0.5)  # getaddrinfo ignores socket timeouts
    return bool(result and result[0])


def _online() -> bool:
    """Online only when asked for (``HF_HUB_OFFLINE=0``) and the hub really answers."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in ("0", "false", "no", "off") and _hub_reachable()


def _missing_weights_error(name: str, cfg: dict[str, Any], dirs: list[Path]) -> DataError:
    import timm

    hub_id = cfg.get("hf_hub_id")
    if not hub_id and not cfg.get("url"):
        alt = timm.list_pretrained(f"*{name.split('.')[0]}*")[:5]
        hint = f"; variants with weights: {', '.join(alt)}" if alt else ""
        return DataError(
            f"timm has no ImageNet weights for {name!r} (tag {cfg.get('tag')!r}){hint}; "
            "set model.weights to a file of your own or choose another backbone",
            where="field model.pretrained",
        )
    folder = str(dirs[0]) if dirs else f"${WEIGHTS_ENV}"
    target = os.path.join(folder, f"{name}.safetensors")
    hub = f"model.safetensors of https://huggingface.co/{hub_id}" if hub_id else cfg.get("url")
    hf = (
        f" or the Hugging Face cache ({_hub_cache()}/models--{hub_id.replace('/', '--')}/"
        f"snapshots/<rev>/model.safetensors, e.g. `hf download {hub_id}`)"
        if hub_id
        else ""
    )
    unset = "" if dirs else f" (set model.weights_dir or ${WEIGHTS_ENV} to a weights folder)"
    return DataError(
        f"no local ImageNet weights for {name!r} and the hub is offline (nothing is downloaded "
        f"unless HF_HUB_OFFLINE=0); place {hub} at {target}{unset}{hf}, "
        "or set model.weights to the file",
        where="field model.pretrained",
    )


def resolve_pretrained(
    name: str, weights: str | None, cache_dirs: list[str] | None = None
) -> str | None:
    """The local file to load ImageNet weights of ``name`` from.

    Looks, in order, at: ``weights`` (must exist); ``<dir>/<name>.pth``,
    ``<dir>/<name>.safetensors`` and ``<dir>/<name>/model.safetensors`` for each folder of
    ``cache_dirs`` and ``$MEDSWEEP_WEIGHTS`` (``<name>`` is also tried as the bare architecture
    and as ``arch.tag``); the Hugging Face cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``,
    ``models--timm--<id>/snapshots/*/model.safetensors``); the torch hub cache.

    Returns:
        The file's absolute path, or None when nothing is on disk but the hub may be used
        (``HF_HUB_OFFLINE=0`` and huggingface.co answers): timm then downloads.

    Raises:
        DataError: ``weights`` does not exist (``field model.weights``); the model is unknown
            (``field model.backbone``); nothing found offline (``field model.pretrained``,
            naming the file to place and where).
    """
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError("weights file not found", source=weights, where="field model.weights")
        return str(path.resolve())
    cfg = _cfg(name)
    dirs = _weight_dirs(cache_dirs)
    for folder in dirs:
        for n in _local_names(name, cfg):
            for cand in (f"{n}.pth", f"{n}.safetensors", f"{n}/model.safetensors"):
                if (folder / cand).is_file():
                    return str((folder / cand).resolve())
    for cand_path in _cache_candidates(cfg):
        if cand_path.is_file():
            return str(cand_path.resolve())
    if _online():
        return None
    raise _missing_weights_error(name, cfg, dirs)


@contextmanager
def _capture_missing_keys(out: list[str]) -> Iterator[None]:
    """Collect the missing keys timm logs (INFO) while loading weights non-strictly."""
    logger = logging.getLogger("timm.models._builder")

    class _Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = _MISSING.search(record.getMessage())
            if match:
                out.extend(k.strip() for k in match.group(1).split(",") if k.strip())

    handler, level, propagate = _Grab(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our INFO level must not reach the application's log
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _classifier_prefixes(cfg: dict[str, Any]) -> tuple[str, ...]:
    heads = cfg.get("classifier") or ()
    return tuple(f"{h}." for h in ((heads,) if isinstance(heads, str) else heads))


def create_classifier(
    name: str,
    num_classes: int,
    pretrained_file: str | None,
    drop_rate: float = 0.0,
    *,
    download: bool = False,
) -> nn.Module:
    """A timm model with a freshly initialised ``num_classes`` head.

    Args:
        name: timm model name.
        num_classes: outputs of the new head (1 for a binary logit).
        pretrained_file: weights to load (from :func:`resolve_pretrained`) through timm's
            ``pretrained_cfg_overlay=dict(file=...)``; None builds without a file.
        drop_rate: dropout before the head.
        download: with no file, let timm fetch the default weights (only when
            :func:`resolve_pretrained` returned None); otherwise None means random weights.

    Raises:
        DataError: (``field model.pretrained``) the file cannot be read or does not fit the
            model (wrong shapes, or backbone weights missing from it).
    """
    import timm

    cfg = _cfg(name)
    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate}
    if pretrained_file is None:
        model = timm.create_model(name, pretrained=download, **kwargs)
        return model
    kwargs["pretrained_cfg_overlay"] = {"file": str(Path(pretrained_file).expanduser())}
    missing: list[str] = []
    try:
        with _capture_missing_keys(missing):
            model = timm.create_model(name, pretrained=True, **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError, EOFError) as exc:
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise DataError(
            f"cannot load these weights into {name}: {first}",
            source=pretrained_file,
            where="field model.pretrained",
        ) from exc
    backbone_missing = [k for k in missing if not k.startswith(_classifier_prefixes(cfg))]
    if backbone_missing:
        shown = ", ".join(backbone_missing[:5])
        raise DataError(
            f"the file lacks {len(backbone_missing)} weights of {name} (e.g. {shown}); "
            "is it a checkpoint of another architecture?",
            source=pretrained_file,
            where="field model.pretrained",
        )
    cast(Any, model).reset_classifier(
        num_classes
    )  # never keep an ImageNet head, even at 1000 classes
    return model
