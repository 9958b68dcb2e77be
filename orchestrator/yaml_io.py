"""Strict YAML reading for configs and `--set` values.

PyYAML's safe loader already refuses Python tags, but it silently keeps the last of two equal
keys (a typo'd second `lr:` wins without a word), accepts alias chains that expand to billions
of values, reads `1e-3` as a string, and its errors are multi-line. Everything here raises
`ConfigError` naming the file (or `--set` key) and the line: exit 2, one paragraph, never a
traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from orchestrator.errors import ConfigError

MAX_VALUES = 5_000_000  # after aliases are expanded; "billion laughs" documents reach 10**9
_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser when PyYAML has it (a 200,000-value search space parses in about a second
# instead of ten); the constructor, where the checks live, is Python either way.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(_Base):
    """SafeLoader that refuses duplicate mapping keys."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(self, node)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats: PyYAML (YAML 1.1) reads `1e-3` and `1.0e30` as strings (its float pattern needs
# a dot and a signed exponent), so a search space `[1.0e30, 1.0e-3]` would mix str and float.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _check_duplicates(loader: StrictLoader, node: yaml.MappingNode) -> None:
    """Explicit keys must be unique (keys merged in with `<<` may be overridden, as YAML says)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # unhashable: the base constructor reports it
            continue
        if first is not None:
            lines = f"twice on line {line}" if first == line else f"on line {first} and {line}"
            problem = f"duplicate key {key!r} ({lines}); keep one of them"
            raise ConstructorError(None, None, problem, key_node.start_mark)
        seen[key] = line


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
        data = yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no Python objects
        too_big = _expanded_size(data, {}) > MAX_VALUES
    except yaml.YAMLError as err:
        problem, at = _one_line(err)
        place = ", ".join(p for p in (where, at) if p) or None
        raise ConfigError(f"not valid YAML: {problem}", source=source, where=place) from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", source=source, where=where) from None
    if too_big:
        raise ConfigError(
            f"the document holds more than {MAX_VALUES:,} values once its aliases (*name) are "
            "expanded",
            source=source,
            where=where,
        )
    return data


def _expanded_size(value: Any, seen: dict[int, int]) -> int:
    """How many values `value` holds with every alias expanded; shared parts are counted once
    per use but measured once, so this stays linear in the document's size."""
    if not isinstance(value, dict | list):
        return 1
    known = seen.get(id(value))
    if known is not None:
        return known
    items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
    total = 1
    for item in items:
        total += _expanded_size(item, seen)
        if total > MAX_VALUES:
            break
    seen[id(value)] = total
    return total


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
