"""The daily run against the sandbox, end to end, as the README's first command runs it."""

import json


def test_daily_run_is_green_and_writes_the_report_set(project):
    project.copy_checks()
    project.copy_environment()
    result = project.run("-m", "daily")
    assert result.returncode == 0, result.output
    run = project.latest()
    for name in ("report.html", "junit.xml", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "allure-results").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["environment"]["name"] == "sandbox"
    assert summary["counts"]["FAIL"] == 0
    assert summary["counts"]["PASS"] >= 8
    ran = [c for c in summary["checks"] if c["outcome"] != "SKIP"]
    assert all(c["evidence"] for c in ran), [c["nodeid"] for c in ran if not c["evidence"]]
    skipped = [c for c in summary["checks"] if c["outcome"] == "SKIP"]
    assert all(c["message"] for c in skipped)  # every SKIP says why
    # ./ops installs every component's package: nothing may be skipped as not installed.
    missing = [c["message"] for c in skipped if "not available" in c["message"]]
    assert not missing, missing
