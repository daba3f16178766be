"""Environment-file errors are exit code 4 with one line, before any target is contacted;
``--env`` / ``OPSVERIFY_ENV`` / default precedence is visible in the report header.

Every bad file points its targets at a real listening socket (``hung_server``) whose accept
count proves that no connection was attempted; a control run shows the count does move.
"""

from __future__ import annotations

import json
import re

import pytest

GOOD = """\
description: environment errors test
settings:
  timeout_s: 1
targets:
  api:
    type: http
    url: http://127.0.0.1:{port}
    health: {{path: /health}}
  db:
    type: postgres
    dsn: postgresql://opsverify:not-a-real-pw@127.0.0.1:{port}/x
  cache:
    type: redis
    url: redis://127.0.0.1:{port}/0
"""

# (id, edit of GOOD as (old, new), arguments, the expected error as a regex matched
# against the single line pytest prints)
F = r"environments/bad\.yaml"
CASES = [
    ("malformed-yaml", ("    health: {path: /health}", "    health: {path: /health"), [],
     rf"{F}:\d+: not valid YAML: expected ',' or '}}', but got .+"),
    ("unset-variable", ("not-a-real-pw", "${OPSVERIFY_TEST_UNSET_PASSWORD}"), [],
     rf"{F}:11 targets\.db\.dsn: variable OPSVERIFY_TEST_UNSET_PASSWORD is not set "
     r"\(export it, or write \$\{OPSVERIFY_TEST_UNSET_PASSWORD:-default\}\)"),
    ("unknown-top-level-key", ("settings:", "colour: blue\nsettings:"), [],
     rf"{F}:2 colour: unknown key; expected one of: description, .*settings, targets.*"),
    ("unknown-target-key", ("    type: postgres", "    type: postgres\n    passwd: x"), [],
     rf"{F}:11 targets\.db\.passwd: unknown key; expected one of: .*dsn.*"),
    ("wrong-type", ("timeout_s: 1", "timeout_s: soon"), [],
     rf"{F}:3 settings\.timeout_s: Input should be a valid number.*, got 'soon'"),
    ("concurrency-zero", ("timeout_s: 1", "timeout_s: 1\n  max_concurrency: 0"), [],
     rf"{F}:4 settings\.max_concurrency: Input should be greater than or equal to 1, got 0"),
    ("wrong-type-target", ("  cache:\n", "  cache: redis\n  cache2:\n"), [],
     rf"{F}:12 targets\.cache: expected a mapping, got a string"),
    ("unknown-target-type", ("type: postgres", "type: postgress"), [],
     rf"{F}:10 targets\.db\.type: 'postgress' is not a target type; "
     r"choose one of: (\w+, )*http, (\w+, )*postgres, (\w+, )*redis(, \w+)*"),
    ("invalid-threshold-id", ("targets:", "thresholds:\n  DiskUsed: {warn: 1}\ntargets:"), [],
     rf"{F}:5 thresholds\.DiskUsed: 'DiskUsed' is not a threshold id of the form "
     r"<area>\.<metric>.*"),
    ("invalid-target-threshold-id",
     ("    type: redis", "    type: redis\n    thresholds: {used memory: {crit: 1}}"), [],
     rf"{F}:14 targets\.cache\.thresholds\.used memory: 'used memory' is not a threshold id.*"),
    ("duplicate-target", ("  cache:", "  db:"), [],
     rf"{F}:12 targets\.db: duplicate key \(first at line 9\); give each key once"),
    ("not-utf8", ("errors test", "errors t\udcffst"), [],
     rf"{F}:1: not UTF-8 text \(byte 0xff\); save the file as UTF-8"),
    ("unknown-environment-name", None, ["--env", "nosuch"],
     r"unknown environment 'nosuch' \(--env\); available: examples/demo, good, "
     r"or give a path to a \.yaml file"),
    ("unknown-target", None, ["--env", "good", "--target", "nope"],
     r"--target nope: no such target in environment 'good'; targets: api, cache, db"),
]


@pytest.mark.parametrize(("edit", "args", "expected"),
                         [pytest.param(*rest, id=name) for name, *rest in CASES])
def test_environment_error_is_exit_4_one_line_and_no_connection(
    project, hung_server, edit, args, expected
):
    good = GOOD.format(port=hung_server.port)
    project.write("environments/good.yaml", good)
    project.write("environments/examples/demo.yaml", good)
    if edit is not None:
        text = _replace(good, *edit)
        path = project.path / "environments" / "bad.yaml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    project.copy_checks()

    result = project.run(*(args or ["--env", "bad"]), "-p", "no:randomly")

    assert result.returncode == 4, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert re.fullmatch(rf"ERROR: {expected}", lines[0]), lines[0]
    assert hung_server.accepted == [], "a target was contacted before the file was valid"


def test_the_listener_does_count_connections(project, hung_server):
    """Control: with a valid file the same targets are contacted, so 0 above means
    'not attempted', not 'not counted'."""
    project.write("environments/good.yaml", GOOD.format(port=hung_server.port))
    project.copy_checks()
    result = project.run("--env", "good", "--target", "api", "-m", "daily")
    assert result.returncode == 1, result.output
    assert "api (http://127.0.0.1:" in result.output
    assert len(hung_server.accepted) >= 1


def test_bad_file_in_a_sandbox_environment_starts_no_server(project, tmp_path):
    """A sandbox environment whose target section is invalid fails before any server
    starts and leaves no sandbox directory behind."""
    text = (project.copy_environment()).read_text()
    project.write("environments/sandbox.yaml", _replace(text, "type: redis", "type: rediss"))
    sandbox_dir = tmp_path / "sandbox-tmp"
    sandbox_dir.mkdir()
    result = project.run(env={"TMPDIR": str(sandbox_dir)})
    assert result.returncode == 4, result.output
    assert re.search(r"ERROR: environments/sandbox\.yaml:\d+ targets\.cache\.type: "
                     r"'rediss' is not a target type", result.output), result.output
    assert list(sandbox_dir.iterdir()) == [], "the planned sandbox left its directory"


ENV_CHECK = """\
import pytest


@pytest.mark.daily
def test_environment(env, evidence):
    evidence.note("environment", env.name)
    evidence.note("timeout_s", env.model.settings.timeout_s)
"""


def _environments(project):
    project.write("checks/health/test_env.py", ENV_CHECK)
    for name, timeout in (("sandbox", "11"), ("alpha", "12"), ("beta", "${BETA_TIMEOUT:-7}")):
        project.write(f"environments/{name}.yaml",
                      f"description: the {name} environment\nsettings:\n"
                      f"  timeout_s: {timeout}\n")
    project.write("elsewhere/gamma.yaml", "settings:\n  timeout_s: 14\n")


@pytest.mark.parametrize(
    ("args", "environ", "name", "path", "chosen_by", "timeout"),
    [
        pytest.param([], {}, "sandbox", "environments/sandbox.yaml", "default", 11,
                     id="default"),
        pytest.param([], {"OPSVERIFY_ENV": "beta"}, "beta", "environments/beta.yaml",
                     "OPSVERIFY_ENV", 7, id="OPSVERIFY_ENV-name"),
        pytest.param([], {"OPSVERIFY_ENV": "elsewhere/gamma.yaml"}, "gamma",
                     "elsewhere/gamma.yaml", "OPSVERIFY_ENV", 14, id="OPSVERIFY_ENV-path"),
        pytest.param(["--env", "alpha"], {"OPSVERIFY_ENV": "beta"}, "alpha",
                     "environments/alpha.yaml", "--env", 12, id="--env-name-beats-variable"),
        pytest.param(["--env", "elsewhere/gamma.yaml"], {"OPSVERIFY_ENV": "beta"}, "gamma",
                     "elsewhere/gamma.yaml", "--env", 14, id="--env-path-beats-variable"),
        pytest.param(["--env", "beta"], {"BETA_TIMEOUT": "9"}, "beta",
                     "environments/beta.yaml", "--env", 9, id="variable-beats-its-default"),
    ],
)
def test_env_precedence_and_the_header_says_which(
    project, args, environ, name, path, chosen_by, timeout
):
    _environments(project)
    result = project.run(*args, env=environ)
    assert result.returncode == 0, result.output
    header = f"opsverify: environment {name!r} from "
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith(header))
    assert line.endswith(f"{path} (chosen by {chosen_by})"), line
    summary = json.loads((project.latest(name) / "summary.json").read_text())
    assert summary["environment"]["name"] == name
    assert summary["environment"]["chosen_by"] == chosen_by
    assert summary["environment"]["path"].endswith(path)
    evidence = {m["name"]: m["value"] for m in summary["checks"][0]["evidence"]}
    assert evidence == {"environment": name, "timeout_s": timeout}
    html = (project.latest(name) / "report.html").read_text()
    assert f"(chosen by {chosen_by})" in html


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)
