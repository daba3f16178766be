"""opsverify engine: environments, target clients, thresholds, secrets, sandbox, reports.

Nothing in this package imports pytest; the glue lives in ``fixtures/``.
"""
