"""CenterNet's backbone: a timm ``features_only`` model with named stages and local weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tasks.common.weights import load_backbone_weights


def _has_tensors(m: nn.Module) -> bool:
    return next(m.parameters(), None) is not None or next(m.buffers(), None) is not None


class Backbone(nn.Module):
    """A timm ``features_only`` model; forward returns the feature maps of `out_indices`.

    ``pretrained=True`` needs a local `weights` file: nothing is ever downloaded.
    """

    def __init__(
        self,
        name: str = "resnet18",
        *,
        pretrained: bool = False,
        weights: str | Path | None = None,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        import timm

        if pretrained and weights is None:
            raise ValueError("pretrained=True needs a local `weights` file (nothing is downloaded)")
        kwargs: dict[str, Any] = {} if out_indices is None else {"out_indices": tuple(out_indices)}
        self.body = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
        self.name = name
        info: Any = self.body.feature_info  # timm's FeatureInfo (untyped)
        self.feature_modules: list[str] = list(info.module_name())
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self.load_report = load_backbone_weights(self.body, weights) if weights else None

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))

    def _feature_paths(self) -> list[str]:
        """Feature-point module paths as they exist in `body` (timm may flatten '.' to '_')."""
        found = dict(self.body.named_modules())
        paths = []
        for name in self.feature_modules:
            path = name if name in found else name.replace(".", "_")
            if path not in found:
                raise ValueError(f"feature module {name!r} not found in {self.name}")
            paths.append(path)
        return paths

    def stages(self) -> dict[str, list[nn.Module]]:
        """Named stages, upstream -> downstream; every module with tensors is in exactly one.

        A stage ends at one feature point of `feature_info` and holds the modules since the
        previous one (resnet: ``stem`` = conv1+bn1, then ``layer1``..``layer4``). Stages are
        named by the feature module (dots -> underscores); a parameter-free feature point (the
        resnet ``act1``) as first stage is called ``stem``.
        """
        paths = self._feature_paths()
        groups: list[list[nn.Module]] = [[] for _ in paths]
        pending: list[nn.Module] = []
        closed = 0

        def walk(module: nn.Module, prefix: str) -> None:
            nonlocal closed, pending
            for name, child in module.named_children():
                path = prefix + name
                if path in paths:
                    closed = paths.index(path)
                    groups[closed] += [*pending, child]
                    pending = []
                elif any(p.startswith(path + ".") for p in paths):
                    walk(child, path + ".")
                else:
                    pending.append(child)

        walk(self.body, "")
        groups[-1] += pending  # trailing modules (timm usually truncates them) join the last stage
        names = [
            "stem"
            if i == 0 and not _has_tensors(self.body.get_submodule(p))
            else p.replace(".", "_")
            for i, p in enumerate(paths)
        ]
        return {n: [m for m in g if _has_tensors(m)] for n, g in zip(names, groups, strict=True)}
