"""The engine on its own, without pytest plugins: thresholds, evidence, secrets, probes' helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsverify.environment import EnvironmentChoice, load
from opsverify.errors import WriteRefused
from opsverify.evidence import EvidenceLog, fmt_value
from opsverify.secrets import MASK, SecretRegistry
from opsverify.stats import percentile
from opsverify.targets.http import MISSING, json_path
from opsverify.targets.postgres import Bounds, refuse_writes
from opsverify.thresholds import AppliedThreshold, Limits, Threshold, Verdict, judge, resolve


def applied(warn: float | None, crit: float | None, direction: str = "max") -> AppliedThreshold:
    return AppliedThreshold("x.y", warn, crit, direction, "test")  # type: ignore[arg-type]


# -- thresholds ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "verdict", "limit"),
    [(50, Verdict.PASS, None), (80, Verdict.PASS, None), (80.1, Verdict.WARN, 80),
     (95, Verdict.WARN, 80), (95.5, Verdict.FAIL, 95)],
    ids=["below", "at-warn", "past-warn", "at-crit", "past-crit"],
)
def test_judge_at_most(value: float, verdict: Verdict, limit: float | None) -> None:
    assert judge(value, applied(80, 95)) == (verdict, limit)


@pytest.mark.parametrize(
    ("value", "verdict", "limit"),
    [(90, Verdict.PASS, None), (30, Verdict.PASS, None), (29, Verdict.WARN, 30),
     (7, Verdict.WARN, 30), (6, Verdict.FAIL, 7)],
    ids=["above", "at-warn", "under-warn", "at-crit", "under-crit"],
)
def test_judge_direction_min(value: float, verdict: Verdict, limit: float | None) -> None:
    """``direction="min"``: days left on a certificate must stay above the limits."""
    assert judge(value, applied(30, 7, "min")) == (verdict, limit)


def test_judge_with_only_one_limit() -> None:
    assert judge(10**9, applied(None, 5))[0] is Verdict.FAIL
    assert judge(10**9, applied(5, None))[0] is Verdict.WARN
    assert judge(1, applied(None, 5))[0] is Verdict.PASS


def test_resolve_precedence_target_then_environment_then_default() -> None:
    default = Threshold(warn=1, crit=2, direction="min")
    target, env = Limits(warn=10, crit=20), Limits(crit=200)
    both = resolve("t.x", default, target_limits=target, target_source="env.yaml:30",
                   env_limits=env, env_source="env.yaml:5")
    assert (both.warn, both.crit, both.source) == (10, 20, "env.yaml:30")
    env_only = resolve("t.x", default, target_limits=None, target_source="env.yaml:30",
                       env_limits=env, env_source="env.yaml:5")
    # An override replaces the whole threshold: no warn inherited from the default.
    assert (env_only.warn, env_only.crit, env_only.source) == (None, 200, "env.yaml:5")
    neither = resolve("t.x", default, target_limits=None, target_source="",
                      env_limits=None, env_source="", default_source="check default")
    assert (neither.warn, neither.crit, neither.source) == (1, 2, "check default")
    # The direction is the check's: an environment only moves the limits.
    assert {both.direction, env_only.direction, neither.direction} == {"min"}


def test_limits_need_warn_or_crit() -> None:
    with pytest.raises(ValueError, match="give warn, crit or both"):
        Limits()
    with pytest.raises(ValueError, match="extra"):
        Limits.model_validate({"warn": 1, "critical": 2})


def test_applied_threshold_describes_itself() -> None:
    assert applied(80, 95).describe() == "warn ≤ 80, crit ≤ 95"
    assert applied(30, 7, "min").describe() == "warn ≥ 30, crit ≥ 7"


# -- evidence ------------------------------------------------------------------------------
def test_evidence_lines_say_target_value_expectation_and_source() -> None:
    log = EvidenceLog(None, "db")
    log.within("postgres.connections_used_pct", 96.25, unit="%",
               default=Threshold(warn=80, crit=90))
    log.within("tls.days_left", 20, unit="days", default=Threshold(30, 7, "min"))
    log.within("disk.used_pct", 12.0, unit="%", default=Threshold(80, 90))
    log.expect("status", 503, equals=200)
    log.expect("replicas", 1, at_least=2, source="environments/prod.yaml:9")
    log.note("server_version", "16.2")
    lines = [m.line() for m in log.measurements]
    assert lines == [
        "db: postgres.connections_used_pct = 96.2 %, expected ≤ 90 % (crit from check default)"
        " → FAIL",
        "db: tls.days_left = 20 days, expected ≥ 30 days (warn from check default) → WARN",
        "db: disk.used_pct = 12 %, expected ≤ 90 % (crit from check default)",
        "db: status = 503, expected = 200 → FAIL",
        "db: replicas = 1, expected ≥ 2 (environments/prod.yaml:9) → FAIL",
        "db: server_version = '16.2'",
    ]
    assert log.verdict is Verdict.FAIL
    assert [m.name for m in log.with_verdict(Verdict.WARN)] == ["tls.days_left"]


def test_evidence_verdict_is_the_worst_measurement() -> None:
    log = EvidenceLog(None, "api")
    assert log.verdict is Verdict.PASS
    assert log.last_sequence() == -1
    log.note("samples", 10)
    assert log.verdict is Verdict.PASS
    log.within("http.latency_p95_ms", 1200, unit="ms", default=Threshold(1000, 2000))
    assert log.verdict is Verdict.WARN
    log.expect("status", 200, equals=200)
    assert log.verdict is Verdict.WARN
    log.expect("body", None, at_most=5)  # not a number: cannot hold
    assert log.verdict is Verdict.FAIL
    sequences = [m.sequence for m in log.measurements]
    assert sequences == sorted(sequences)
    assert log.last_sequence() == sequences[-1]


def test_expect_needs_an_expectation_and_combines_them() -> None:
    log = EvidenceLog(None, "x")
    with pytest.raises(TypeError):
        log.expect("nothing", 1)
    m = log.expect("free", 15, at_least=10, at_most=20, unit="GB")
    assert (m.verdict, m.expected) == (Verdict.PASS, "≤ 20 and ≥ 10 GB")
    assert log.expect("flag", True, at_most=5).verdict is Verdict.FAIL  # a bool is no number


def test_evidence_to_dict_is_json_ready() -> None:
    log = EvidenceLog(None, "db")
    m = log.note("when", Path("/x"))
    data = m.to_dict()
    assert data == {"name": "when", "target": "db", "value": "/x", "unit": "",
                    "verdict": "PASS", "expected": "", "source": "", "item": "",
                    "capacity": None, "warn": None, "crit": None}


@pytest.mark.parametrize(("value", "shown"), [
    (300.0, "300"), (403.5, "403.5"), (1.1008, "1.1"), (0.001, "0.001"), (12345.678, "12345.7"),
    (4, "4"), ("on", "'on'"), (True, "True"),
])
def test_values_are_shown_readably(value: object, shown: str) -> None:
    assert fmt_value(value) == shown


def test_threshold_precedence_and_source_from_an_environment_file(tmp_path: Path) -> None:
    path = tmp_path / "prod.yaml"
    path.write_text(
        "thresholds:\n"
        "  postgres.stale_idle_sessions: {warn: 1, crit: 3}\n"
        "targets:\n"
        "  db:\n"
        "    type: postgres\n"
        "    dsn: postgresql://u@127.0.0.1:1/x\n"
        "    thresholds:\n"
        "      postgres.stale_idle_sessions: {crit: 10}\n"
        "  db2:\n"
        "    type: postgres\n"
        "    dsn: postgresql://u@127.0.0.1:1/y\n"
    )
    env = load(EnvironmentChoice("prod", path, "--env"), {})
    default = Threshold(warn=5, crit=20)
    own = EvidenceLog(env, "db").within("postgres.stale_idle_sessions", 4, default=default)
    assert (own.verdict, own.expected) == (Verdict.PASS, "≤ 10")
    assert own.source == f"crit from {path}:8"
    inherited = EvidenceLog(env, "db2").within("postgres.stale_idle_sessions", 4,
                                               default=default)
    assert (inherited.verdict, inherited.source) == (Verdict.FAIL, f"crit from {path}:2")
    fallback = EvidenceLog(env, "db2").within("postgres.other", 6, default=default)
    assert (fallback.verdict, fallback.source) == (Verdict.WARN, "warn from check default")


# -- secrets -------------------------------------------------------------------------------
def test_scrub_masks_a_secret_in_every_form_it_takes_in_urls() -> None:
    registry = SecretRegistry()
    registry.add("p@ss w/rd+&=")
    text = ("plain p@ss w/rd+&= quoted p%40ss%20w%2Frd%2B%26%3D "
            "plus p%40ss+w%2Frd%2B%26%3D end")
    assert registry.scrub(text) == f"plain {MASK} quoted {MASK} plus {MASK} end"


def test_scrub_masks_the_password_inside_a_dsn_and_the_dsn_whole() -> None:
    registry = SecretRegistry()
    dsn = "postgresql://monitor:s3cr%2Ft@db.internal:5432/app"
    registry.add(dsn)
    assert registry.scrub(f"connecting to {dsn} failed") == f"connecting to {MASK} failed"
    # libpq and drivers print the decoded password on its own.
    assert registry.scrub("password s3cr/t rejected") == f"password {MASK} rejected"
    assert registry.scrub("password s3cr%2Ft rejected") == f"password {MASK} rejected"
    assert "monitor" in registry.scrub(f"user monitor via {dsn}")


def test_scrub_ignores_values_too_short_to_be_secrets_and_masks_longest_first() -> None:
    registry = SecretRegistry()
    registry.add_all(["on", None, "", "abcd", "abcdefgh"])
    assert registry.values >= {"abcd", "abcdefgh"}
    assert "on" not in registry.values
    assert registry.scrub("on abcdefgh abcd") == f"on {MASK} {MASK}"
    assert SecretRegistry().scrub("nothing registered") == "nothing registered"


def test_scrub_tree_cleans_text_files_and_skips_binary(tmp_path: Path) -> None:
    registry = SecretRegistry()
    registry.add("canary-7f3a9")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text('{"dsn": "redis://:canary-7f3a9@h:1"}')
    (tmp_path / "b.txt").write_text("clean")
    (tmp_path / "c.bin").write_bytes(b"\xff\xfe canary-7f3a9")
    assert registry.scrub_tree(tmp_path) == 1
    assert "canary" not in (tmp_path / "sub" / "a.json").read_text()
    assert (tmp_path / "b.txt").read_text() == "clean"


# -- probes' helpers -----------------------------------------------------------------------
DETAILED = {
    "status": "degraded",
    "components": {"database": {"status": "unhealthy"}, "cache": {"status": "healthy"}},
    "replicas": [{"lag": 1}, {"lag": 40}],
}


def test_json_path_star_expands_mappings_and_lists() -> None:
    assert json_path(DETAILED, "status") == [("status", "degraded")]
    assert json_path(DETAILED, "components.*.status") == [
        ("components.database.status", "unhealthy"), ("components.cache.status", "healthy")]
    assert json_path(DETAILED, "replicas.*.lag") == [("replicas[0].lag", 1),
                                                    ("replicas[1].lag", 40)]
    assert json_path(DETAILED, "replicas.1.lag") == [("replicas[1].lag", 40)]


def test_json_path_reports_what_is_missing() -> None:
    assert json_path(DETAILED, "components.queue.status") == [
        ("components.queue.status", MISSING)]
    assert json_path(DETAILED, "replicas.7") == [("replicas.7", MISSING)]
    assert json_path(None, "status") == [("status", MISSING)]
    assert json_path({"components": {}}, "components.*.status") == []


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(100, 0, -1)]
    assert percentile(samples, 95) == 95
    assert percentile(samples, 50) == 50
    assert percentile(samples, 100) == 100
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 400.0], 95) == 400.0  # one slow sample in four is p95
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 95)


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "  select count(*) from runs;  ",
    "-- how many?\nSELECT count(*) FROM runs",
    "/* header\n comment */ SHOW server_version",
    "WITH r AS (SELECT * FROM runs) SELECT count(*) FROM r",
    "EXPLAIN SELECT 1",
    "VALUES (1)",
    "TABLE runs",
])
def test_refuse_writes_lets_single_reads_through(sql: str) -> None:
    refuse_writes(sql)


@pytest.mark.parametrize("sql", [
    "DELETE FROM runs",
    "  insert into runs values (1)",
    "-- harmless\nUPDATE runs SET status = 'failed'",
    "/* SELECT */ DROP TABLE runs",
    "SELECT 1; DELETE FROM runs",
    "select 1;delete from runs;",
    "",
    "-- only a comment",
], ids=["delete", "insert", "after-comment", "select-in-comment", "two-statements",
        "two-no-space", "empty", "comment-only"])
def test_refuse_writes_refuses_writes_and_several_statements(sql: str) -> None:
    with pytest.raises(WriteRefused):
        refuse_writes(sql)


@pytest.mark.parametrize("sql", [
    "SELECT pg_terminate_backend(4242)",
    "select set_config('default_transaction_read_only', 'off', false)",
    "SELECT nextval('runs_id_seq')",
    "SELECT pg_advisory_lock(1)",
    "WITH p AS (SELECT 4242 AS pid) SELECT PG_CANCEL_BACKEND (pid) FROM p",
])
def test_refuse_writes_refuses_functions_with_side_effects(sql: str) -> None:
    """A read-only transaction does not stop these: the client must."""
    with pytest.raises(WriteRefused, match="changes server state"):
        refuse_writes(sql)


def test_refuse_writes_sees_past_comment_markers_in_literals_to_side_effects() -> None:
    with pytest.raises(WriteRefused):
        refuse_writes("SELECT '--', pg_terminate_backend(4242)")


def test_refuse_writes_refuses_a_data_modifying_cte() -> None:
    with pytest.raises(WriteRefused):
        refuse_writes("WITH gone AS (DELETE FROM runs RETURNING id) SELECT count(*) FROM gone")


def test_refuse_writes_is_not_fooled_by_comment_markers_in_literals() -> None:
    with pytest.raises(WriteRefused):
        refuse_writes("SELECT '--'; DELETE FROM runs")


def test_bounds() -> None:
    assert Bounds(max=0).violated_by(0) is None
    assert Bounds(max=0).violated_by(1) == "expected ≤ 0"
    assert Bounds(min=1).violated_by("0") == "expected ≥ 1"
    assert Bounds(min=1, max=3).violated_by(2.5) is None
    assert Bounds(equals="on").violated_by("on") is None
    assert Bounds(equals="on").violated_by("off") == "expected = on"
    assert Bounds(max=5).violated_by("n/a") == "expected a number"
    with pytest.raises(ValueError, match="give max, min or equals"):
        Bounds()
    with pytest.raises(ValueError, match="extra"):
        Bounds.model_validate({"maximum": 3})


def test_bounds_equals_an_integer() -> None:
    assert Bounds(equals=1).violated_by(1) is None
