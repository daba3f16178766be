"""Reading an environment file: its bytes parsed once per process (libyaml where PyYAML has
it) and kept between runs (:mod:`opsverify.parse_cache`), into its values and the line of
every key path; a key given twice, a file that is not UTF-8 or not YAML is one line that
says where. Split from :mod:`opsverify.environment`, which interpolates and validates.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsverify import parse_cache
from opsverify.errors import EnvironmentFileError

if TYPE_CHECKING:
    import yaml

Path_ = tuple[str | int, ...]
Parsed = tuple[dict[str, Any], dict[Path_, int]]


# A file is parsed once per process however often it is read (sandbox plan, then load).
_PARSED: dict[tuple[str, bytes], Parsed] = {}


def read(path: Path, where: str) -> Parsed:
    """The values and the line map of the file at ``path`` (shown as ``where``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnvironmentFileError(f"{where}: cannot read: {exc.strerror}") from None
    cached = _PARSED.get((where, data))
    if cached is None:
        cached = parse_cache.load(data)  # an earlier run parsed these very bytes
        if cached is None:
            cached = _parse(data, where)
            parse_cache.store(data, cached)
        _PARSED[(where, data)] = cached
    return cached


def _loader() -> Any:
    """libyaml's loader when PyYAML was built with it: 7-10x faster, and its nodes keep
    marks. PyYAML is imported only when a file is parsed (parse_cache)."""
    import yaml
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(data: bytes, where: str) -> Parsed:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data.count(b"\n", 0, exc.start) + 1
        raise EnvironmentFileError(
            f"{where}:{bad_line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8") from None
    import yaml
    try:
        node = yaml.compose(text, Loader=_loader())
        raw = _construct(node)
    except yaml.YAMLError as exc:
        exc = _pure_python_error(text) or exc
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EnvironmentFileError(f"{where}{line}: not valid YAML: {problem}") from None
    lines = _line_map(node, where) if node is not None else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise EnvironmentFileError(f"{where}:1: expected a mapping of keys, got {kind(raw)}")
    return raw, lines


def _pure_python_error(text: str) -> yaml.YAMLError | None:
    """The pure-Python parser's account of a broken file: it says what it found where
    (``expected ',' or '}', but got '<scalar>'``), libyaml only what it missed."""
    import yaml
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return exc
    return None


def _construct(node: yaml.Node | None) -> Any:
    """Python values of a composed document: the file is parsed once, for both its values
    and its line numbers."""
    if node is None:
        return None
    loader = _loader()("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _line_map(node: yaml.Node, where: str) -> dict[Path_, int]:
    """The line of every key path; a key given twice is an error (YAML would silently keep
    the last one: a second ``db:`` would replace the first target)."""
    import yaml
    lines: dict[Path_, int] = {}

    def walk(n: yaml.Node, path: Path_) -> None:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, child in n.value:
                sub = (*path, key.value)
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode) and key.value in seen:
                    raise EnvironmentFileError(
                        f"{where}:{line} {dotted(sub)}: duplicate key (first at line "
                        f"{seen[key.value]}); give each key once")
                if isinstance(key, yaml.ScalarNode):
                    seen[key.value] = line
                lines[sub] = key.start_mark.line + 1
                walk(child, sub)
                lines[sub] = key.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for index, child in enumerate(n.value):
                walk(child, (*path, index))

    walk(node, ())
    return lines


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def kind(value: object) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            dict: "a mapping", bool: "true/false", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
