"""Strict YAML reading for configs and `--set` values.

PyYAML's safe loader already refuses Python tags, but it silently keeps the last of two equal
keys (a typo'd second `lr:` wins without a word), expands alias chains without limit, and its
errors are multi-line. Everything here raises `ConfigError` naming the file (or `--set` key) and
the line: exit 2, one paragraph, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from orchestrator.errors import ConfigError

MAX_ALIASES = 200  # a config needs a handful; "billion laughs" documents need thousands
_MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys and alias bombs."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                problem = f"more than {MAX_ALIASES} alias references (*name)"
                raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(self, node)
        return super().construct_mapping(node, deep=deep)


def _check_duplicates(loader: StrictLoader, node: yaml.MappingNode) -> None:
    """Explicit keys must be unique (keys merged in with `<<` may be overridden, as YAML says)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        try:
            first = seen.setdefault(key, line)
        except TypeError:  # unhashable: the base constructor reports it
            continue
        if first != line:
            raise ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (on line {first} and again on line {line}); "
                "keep one of them",
                key_node.start_mark,
            )


def _one_line(err: yaml.YAMLError) -> tuple[str, str | None]:
    """(problem, 'line L, column C') of a PyYAML error, without its multi-line context."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if "could not determine a constructor for the tag" in problem:
        problem += " (only plain YAML is accepted: no Python or custom tags)"
    return problem, where


def loads(text: str, source: str, where: str | None = None) -> Any:
    """Parse YAML text; errors name `source` and the line (prefixed by `where` if given)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as err:
        problem, at = _one_line(err)
        place = ", ".join(p for p in (where, at) if p) or None
        raise ConfigError(f"not valid YAML: {problem}", source=source, where=place) from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", source=source, where=where) from None


def read_text(path: Path, what: str = "config file") -> str:
    """A text file as UTF-8 (a byte-order mark is allowed); ConfigError naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", source=path) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a file", source=path) from None
    except OSError as err:
        raise ConfigError(f"cannot read {what}: {err.strerror}", source=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{what} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start} "
            "cannot be decoded); save it as UTF-8",
            source=path,
            where=f"line {line}",
        ) from None


def load_file(path: str | Path) -> Any:
    """Read and parse a YAML file strictly."""
    path = Path(path)
    return loads(read_text(path), str(path))
