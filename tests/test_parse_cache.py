"""Parsed environment files kept between runs (opsverify/parse_cache.py): a second run of
the same bytes takes the earlier parse without PyYAML, an edited file is parsed again, and
an entry holds the file as written, never a value from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

ENV = """\
description: cached
settings: {timeout_s: 3}
targets:
  api:
    type: http
    url: http://ops:${CACHE_TOKEN}@127.0.0.1:9/
    health: [{path: /health, expect_status: 200}]
waivers:
  - {check: "test_health[api:/health]", reason: known, owner: ops, expires: 2099-12-31}
"""

LOAD = """
import json, os, sys
from pathlib import Path
from opsverify import environment
choice = environment.EnvironmentChoice("cached", Path(sys.argv[1]), "--env")
try:
    loaded = environment.load(choice, os.environ)
except environment.EnvironmentFileError as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit(0)
print(json.dumps({
    "yaml": "yaml" in sys.modules,
    "url": loaded.model.targets["api"].url,
    "expires": loaded.model.waivers[0].expires.isoformat(),
    "line": loaded.source_of("targets", "api", "health"),
}))
"""


def load(path: Path, cache: Path, **environ: str) -> dict[str, object]:
    env = {**os.environ, "OPSVERIFY_PARSE_CACHE": str(cache), "CACHE_TOKEN": "s3cr3t-token",
           **environ}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(LOAD), str(path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_a_second_run_takes_the_first_parse_without_pyyaml(tmp_path: Path) -> None:
    env, cache = tmp_path / "cached.yaml", tmp_path / "cache"
    env.write_text(ENV)
    first = load(env, cache)
    second = load(env, cache)
    assert first["yaml"] is True
    assert second["yaml"] is False
    assert {k: v for k, v in first.items() if k != "yaml"} == \
        {k: v for k, v in second.items() if k != "yaml"}
    assert second["expires"] == "2099-12-31"  # a date crosses as a date
    assert str(second["line"]).endswith("cached.yaml:7")  # the key's line, from the entry
    assert len(list(cache.glob("*.marshal"))) == 1


def test_an_entry_holds_the_file_as_written_never_an_environment_value(tmp_path: Path
                                                                         ) -> None:
    env, cache = tmp_path / "cached.yaml", tmp_path / "cache"
    env.write_text(ENV)
    load(env, cache)
    [entry] = cache.glob("*.marshal")
    blob = entry.read_bytes()
    assert b"s3cr3t-token" not in blob
    assert b"${CACHE_TOKEN}" in blob
    assert entry.stat().st_mode & 0o077 == 0
    assert cache.stat().st_mode & 0o077 == 0


def test_an_edited_file_is_parsed_again(tmp_path: Path) -> None:
    env, cache = tmp_path / "cached.yaml", tmp_path / "cache"
    env.write_text(ENV)
    load(env, cache)
    env.write_text(ENV.replace("127.0.0.1:9", "127.0.0.1:10"))
    edited = load(env, cache)
    assert edited["yaml"] is True
    assert edited["url"] == "http://ops:s3cr3t-token@127.0.0.1:10/"


def test_a_broken_file_is_never_kept_and_says_where_each_time(tmp_path: Path) -> None:
    env, cache = tmp_path / "cached.yaml", tmp_path / "cache"
    env.write_text(ENV + "description: again\n")  # a key given twice
    first, second = load(env, cache), load(env, cache)
    assert first == second
    assert "duplicate key" in str(first["error"])
    assert "cached.yaml:10" in str(first["error"])
    assert not cache.exists() or not list(cache.glob("*.marshal"))


def test_a_cache_turned_off_keeps_nothing(tmp_path: Path) -> None:
    env = tmp_path / "cached.yaml"
    env.write_text(ENV)
    assert load(env, Path("off"))["yaml"] is True
    assert load(env, Path("off"))["yaml"] is True
    assert not Path(ROOT, "off").exists()


def test_a_cache_that_cannot_be_written_is_a_miss(tmp_path: Path) -> None:
    env = tmp_path / "cached.yaml"
    env.write_text(ENV)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # mkdir under a file fails
    assert load(env, blocked / "cache")["url"] == "http://ops:s3cr3t-token@127.0.0.1:9/"
    assert load(env, blocked / "cache")["yaml"] is True
