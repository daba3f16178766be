"""Environment files: locating, interpolating and validating them before any connection.

Every error is an :class:`EnvironmentFileError` whose message is one line naming the file,
the line, the key path and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.functional_validators import PlainValidator

from opsverify import environment_file
from opsverify.environment_file import Parsed, Path_
from opsverify.environment_file import dotted as _dotted
from opsverify.environment_file import kind as _kind
from opsverify.errors import EnvironmentFileError
from opsverify.history import HistorySpec
from opsverify.secrets import SECRETS
from opsverify.targets import TARGET_TYPES, AnyTarget, spec_class
from opsverify.thresholds import Limits

if TYPE_CHECKING:
    from opsverify.sandbox.spec import SandboxSpec

DEFAULT_ENV = "sandbox"
ENV_VAR = "OPSVERIFY_ENV"
TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class TrendSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_samples: int = Field(default=7, ge=3, le=100000)
    min_span_hours: float = Field(default=24.0, ge=0)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(default=5.0, gt=0, le=300)
    # Probes run at most this many at once, and at most per_target_concurrency against one
    # target: a production server never sees a burst from us (fixtures/probes.py).
    max_concurrency: int = Field(default=32, ge=1, le=256)
    per_target_concurrency: int = Field(default=2, ge=1, le=32)
    # Probes of the types that allow it (HTTP) run in a forked probe process, off the
    # checks' interpreter (opsverify/probe_process.py); false keeps them on threads here.
    probe_process: bool = True
    # A probe that could not be evaluated (refused, timed out, DNS) is tried again up to
    # this many times, with backoff; an answer, even a failing one, never is (probes.Retry).
    retries: int = Field(default=0, ge=0, le=5)
    # allure-results/ in the report set (a result and container files per check).
    allure: bool = False
    # How much history a days-until-full estimate needs (checks/capacity/, *_trend).
    trend: TrendSettings = Field(default_factory=lambda: TrendSettings())


class Waiver(BaseModel):
    """A known failure accepted until ``expires``, with a reason and an owner."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str
    reason: str
    owner: str
    expires: date


def _sandbox_spec(value: Any) -> SandboxSpec | None:
    from opsverify.sandbox.spec import SandboxSpec

    return None if value is None else SandboxSpec.model_validate(value)


class Environment(BaseModel):
    """Schema version 1 of an environment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    protected: bool = False
    settings: Settings = Field(default_factory=Settings)
    thresholds: dict[str, Limits] = Field(default_factory=dict)
    # Each section is validated by its type's model, imported when a target declares it.
    targets: dict[str, AnyTarget] = Field(default_factory=dict)
    waivers: list[Waiver] = Field(default_factory=list)
    history: HistorySpec | None = None
    # Validated by its own model, imported only for a file that has the section.
    sandbox: Annotated[Any, PlainValidator(_sandbox_spec)] = None

    @field_validator("thresholds")
    @classmethod
    def _threshold_ids(cls, value: dict[str, Limits]) -> dict[str, Limits]:
        for key in value:
            _check_threshold_id(key)
        return value


@dataclass(frozen=True)
class EnvironmentChoice:
    """Which environment file was chosen, and why (shown in the report header)."""

    name: str
    path: Path
    source: Literal["--env", "OPSVERIFY_ENV", "default"]


@dataclass(frozen=True)
class LoadedEnvironment:
    choice: EnvironmentChoice
    model: Environment
    lines: Mapping[Path_, int]

    @property
    def name(self) -> str:
        return self.choice.name

    def timeout_for(self, target: str) -> float:
        own = self.model.targets[target].timeout_s
        return own if own is not None else self.model.settings.timeout_s

    def retries_for(self, target: str) -> int:
        own = self.model.targets[target].retries
        return own if own is not None else self.model.settings.retries

    def source_of(self, *path: str | int) -> str:
        """``environments/prod.yaml:14`` for a key path, for evidence and messages."""
        line = self.lines.get(tuple(path))
        where = _display(self.choice.path)
        return f"{where}:{line}" if line else where


def available(env_dir: Path) -> list[str]:
    """Environment names that ``--env`` accepts in ``env_dir``."""
    names = [p.stem for p in env_dir.glob("*.yaml")]
    names += [f"examples/{p.stem}" for p in (env_dir / "examples").glob("*.yaml")]
    return sorted(names)


def choose(option: str | None, environ: Mapping[str, str], env_dir: Path) -> EnvironmentChoice:
    """Apply the precedence ``--env`` > ``OPSVERIFY_ENV`` > ``sandbox``."""
    source: Literal["--env", "OPSVERIFY_ENV", "default"]
    if option:
        value, source = option, "--env"
    elif environ.get(ENV_VAR):
        value, source = environ[ENV_VAR], "OPSVERIFY_ENV"
    else:
        value, source = DEFAULT_ENV, "default"
    if value.endswith((".yaml", ".yml")) or (os.sep in value and Path(value).exists()):
        path = Path(value)
        if not path.is_file():
            raise EnvironmentFileError(f"{value}: environment file not found ({source})")
        return EnvironmentChoice(path.stem, path, source)
    path = env_dir / f"{value}.yaml"
    if not path.is_file():
        choices = ", ".join(available(env_dir)) or "none"
        raise EnvironmentFileError(
            f"unknown environment {value!r} ({source}); available: {choices}, "
            "or give a path to a .yaml file"
        )
    return EnvironmentChoice(value, path, source)


def sandbox_section(choice: EnvironmentChoice) -> SandboxSpec | None:
    """Just the ``sandbox:`` section, validated, to plan the sandbox before the rest."""
    raw, lines = _read(choice)
    section = raw.get("sandbox")
    if section is None:
        return None
    try:
        return _sandbox_spec(section)
    except ValidationError as exc:
        where = _display(choice.path)

        def fail(path: Path_, message: str) -> EnvironmentFileError:
            return EnvironmentFileError(
                f"{where}:{_line_for(lines, path)} {_dotted(path)}: {message}")

        raise _first_error(exc, fail, prefix=("sandbox",)) from None


def load(
    choice: EnvironmentChoice,
    environ: Mapping[str, str],
    generated: Mapping[str, str] | None = None,
) -> LoadedEnvironment:
    """Read, interpolate and validate an environment file. Connects to nothing.

    ``environ`` is the process environment: every value taken from it is a secret.
    ``generated`` holds what the sandbox exports (ports, paths, local URLs); those are not
    secrets themselves, and the credentials inside them are registered by their targets.
    """
    where = _display(choice.path)
    raw, lines = _read(choice)

    def fail(path: Path_, message: str) -> EnvironmentFileError:
        return EnvironmentFileError(f"{where}:{_line_for(lines, path)} {_dotted(path)}: {message}")

    data = _interpolate(raw, (), environ, generated or {}, fail)
    _check_targets(data, fail)
    try:
        model = Environment.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, fail, targets=data.get("targets")) from None
    for spec in model.targets.values():
        SECRETS.add_all(spec.secrets())
    if model.history is not None:
        SECRETS.add_all(model.history.secrets())
    return LoadedEnvironment(choice, model, lines)


def _read(choice: EnvironmentChoice) -> Parsed:
    return environment_file.read(choice.path, _display(choice.path))


def _interpolate(
    value: Any,
    path: Path_,
    environ: Mapping[str, str],
    generated: Mapping[str, str],
    fail: Any,
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), environ, generated, fail)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), environ, generated, fail)
                for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    secret = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal secret
        name, default = match.group(1), match.group(2)
        if name in generated:
            return generated[name]
        if name in environ:
            result = environ[name]
            secret = True
        elif default is not None:
            result = default
        else:
            raise fail(path, f"variable {name} is not set "
                             f"(export it, or write ${{{name}:-default}})")
        if secret:
            SECRETS.add(result)
        return result

    result = _VAR.sub(substitute, value)
    if secret:
        SECRETS.add(result)
    if "${" in result and _VAR.search(value) is None:
        raise fail(path, "malformed ${...}: expected ${NAME} or ${NAME:-default}")
    return _coerce_scalar(result) if _VAR.fullmatch(value) else result


def _coerce_scalar(text: str) -> Any:
    """``timeout_s: ${T:-5}`` should be a number, as if it had been written literally."""
    import yaml
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return loaded if isinstance(loaded, int | float | bool) else text


def _check_targets(data: dict[str, Any], fail: Any) -> None:
    """Target types and names first, so the message is about the type, not its keys;
    threshold ids with their own key path."""
    _check_threshold_ids(data.get("thresholds"), ("thresholds",), fail)
    targets = data.get("targets", {})
    if not isinstance(targets, dict):
        raise fail(("targets",), f"expected a mapping of target names, got {_kind(targets)}")
    for name, spec in targets.items():
        if not isinstance(name, str) or not TARGET_NAME.match(name):
            raise fail(
                ("targets", name),
                f"{name!r} is not a valid target name (lowercase letters, digits, '_', '.', '-')",
            )
        if not isinstance(spec, dict):
            raise fail(("targets", name), f"expected a mapping, got {_kind(spec)}")
        kind = spec.get("type")
        if not isinstance(kind, str) or kind not in TARGET_TYPES:
            choices = ", ".join(sorted(TARGET_TYPES))
            what = f"{kind!r} is not a target type" if kind else "missing"
            raise fail(("targets", name, "type"), f"{what}; choose one of: {choices}")
        _check_threshold_ids(spec.get("thresholds"), ("targets", name, "thresholds"), fail)


def _check_threshold_ids(section: Any, path: Path_, fail: Any) -> None:
    """Each key of a ``thresholds:`` mapping; a wrong type is left to the schema."""
    if not isinstance(section, dict):
        return
    for key in section:
        if not isinstance(key, str):
            raise fail((*path, str(key)), f"{key!r} is not a threshold id of the form "
                                     "<area>.<metric>")
        _threshold_id_or_fail(key, (*path, key), fail)


def _check_threshold_id(key: str) -> None:
    if not re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", key):
        raise ValueError(f"{key!r} is not a threshold id of the form <area>.<metric> "
                         "(such as postgres.connections_used_pct)")


def _threshold_id_or_fail(key: str, path: Path_, fail: Any) -> None:
    try:
        _check_threshold_id(key)
    except ValueError as exc:
        raise fail(path, str(exc)) from None


def _first_error(
    exc: ValidationError, fail: Any, prefix: Path_ = (), targets: Any = None
) -> EnvironmentFileError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = (*prefix, *first["loc"])
    # Inside a target (targets.db.dsn) the keys are its type's: _check_targets has made
    # sure that every target is a mapping with a known type.
    target_type = None
    if len(loc) >= 3 and loc[0] == "targets" and isinstance(targets, dict):
        target_type = str(targets[loc[1]]["type"])
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
        parent = _expected_keys(loc[:-1], target_type)
        if parent:
            message += f"; expected one of: {', '.join(parent)}"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = f"{first['msg']}, got {SECRETS.scrub(repr(first.get('input')))}"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return fail(loc, message)  # type: ignore[no-any-return]


def _expected_keys(loc: Path_, target_type: str | None) -> list[str]:
    """The keys allowed where an unknown one was found, to say what was meant."""
    model: Any = Environment
    parts = list(loc)
    if target_type is not None:
        model, parts = spec_class(target_type), parts[2:]
    for part in parts:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None`` or ``list[X]``, if any."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _line_for(lines: Mapping[Path_, int], path: Path_) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
