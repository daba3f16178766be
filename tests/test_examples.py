"""Every example environment loads once its variables are set, and collecting its checks
touches nothing (DESIGN.md §3: examples/ load without error when their variables are set)."""

import re
from pathlib import Path

import pytest

from opsverify import environment
from opsverify.environment import EnvironmentChoice

EXAMPLES = sorted((Path(__file__).parent.parent / "environments" / "examples").glob("*.yaml"))
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+)\}")


def variables(path: Path) -> dict[str, str]:
    """A plausible value for every variable the file needs (those without a default)."""
    values = {}
    for name in REQUIRED.findall(path.read_text()):
        if name.endswith("DSN"):
            values[name] = "postgresql://ops:pw@127.0.0.1:9/db"
        elif name.endswith("REDIS_URL"):
            values[name] = "redis://:pw@127.0.0.1:9/0"
        elif name.endswith("URL"):
            values[name] = "http://127.0.0.1:9"
        else:
            values[name] = "example-value"
    return values


def test_there_is_one_example_per_seed_system():
    assert {p.stem for p in EXAMPLES} == {
        "gogooku3", "ts_forecast", "erpfts", "t_developer", "tekutoko"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_loads(path):
    choice = EnvironmentChoice(path.stem, path, "--env")
    loaded = environment.load(choice, variables(path))
    assert loaded.model.targets


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_collect_only_lists_checks_without_contacting_anything(project, path):
    project.copy_checks()
    target = project.path / "environments" / "examples" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(path.read_text())
    result = project.run("--env", f"examples/{path.stem}", "--collect-only", "-q",
                         env=variables(path))
    assert result.returncode == 0, result.output
    assert re.search(r"\d+ tests? collected", result.output), result.output
