"""The architecture of opsverify, as pytest plugins. Each is one concern; see fixtures/."""

import gc

# Start-up and collection build objects that live for the whole run (modules, models, items):
# collecting garbage among them found none and cost 0.1 s of a 1,000-target run. The collector
# comes back, over what the checks create only, once collection is done
# (fixtures/probes.py pytest_runtestloop).
gc.disable()

pytest_plugins = [
    "fixtures.sandbox",      # local real servers for environments with a sandbox: section
    "fixtures.environment",  # --env: choose, interpolate, validate (exit 4), share with xdist
    "fixtures.markers",      # cadence, gate, destructive; category from the check's folder
    "fixtures.targets",      # --target; one test per target, readable ids; one-line ERRORs
    "fixtures.probes",       # clients, and the reads checks declare, run in one bounded pool
    "fixtures.outcomes",     # evidence API; PASS/WARN/FAIL/ERROR/SKIP/WAIVED
    "fixtures.history",      # earlier runs' readings for trends; this run's appended after
    "fixtures.reports",      # reports/<env>/<timestamp>/: html, junit, allure, summary.json
    "fixtures.outputs",      # --prometheus-textfile, --pushgateway, --alertmanager, --nagios
    "fixtures.safety",       # --allow-destructive, --plan, --max-actions, audit, re-check
    "fixtures.security",     # secure by default; security.<check>: false opts out, shown
    "fixtures.redaction",    # secrets never leave a report
    "fixtures.http",         # target types: one module each, named as the type
    "fixtures.postgres",
    "fixtures.redis",
    "fixtures.host",
    "fixtures.clickhouse",
    "fixtures.sqlite",
    "fixtures.prometheus",
    "fixtures.docker",
    "fixtures.kubernetes",
    "fixtures.s3",
    "fixtures.aws",
    "fixtures.backup",
]
