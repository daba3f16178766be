"""Every sandbox component's faults: fault name -> what it does, by component.

A light module: every run reads it at start-up, for ``--sandbox-fault``'s choices and help,
and most runs start no sandbox, so it imports nothing (the components themselves import
requests, yaml, pydantic...: see :mod:`opsverify.sandbox.runtime`). It is also where each
component gets its ``faults`` (``faults = FAULTS_OF["postgres"]``), and the names and counts
the texts mention are defined here, for the components to import: a fault's description
and what the component does to inject it cannot drift apart.
"""

from __future__ import annotations

# -- postgres
APP_ROLE = "ts_app"
IDLE_SESSIONS = 4
STALE_SLOT = "reporting_replica"  # a decommissioned replica's slot, never dropped
STALE_SLOT_SEGMENTS = 4  # 16 MiB WAL segments it keeps: past the sandbox db's 32 MiB crit
HOLDER_APP, WAITER_APP = "ts-forecast-retrain", "ts-forecast-api"
# dead-tuples: a flood of debug lines, purged: 6000 dead rows beside the seeded 2000 (75 %);
# what the table holds, and so every dump of it, is as seeded.
FLOODED_TABLE, FLOOD_ROWS = "system_logs", 6000

# -- redis
MAXMEMORY_MB = 32  # a cache with a limit: checks/capacity/test_redis.py judges it
FULL_PCT = 95.0  # redis-memory-full: past the check's crit (90), short of refused writes
IDLE_CLIENTS = 4  # redis-idle-clients: past the sandbox's crit (2), as postgres's leak

# -- sshd (prefixed: docker has a worker too)
SSHD_WORKER = "forecast-worker"  # what ps shows as the worker's comm (at most 15 characters)

# -- clickhouse
DROPPED_TABLE = "features"

# -- prometheus
DEAD_JOB = "ts-forecast-worker"
FAULT_ALERT = "InjectedFault"

# -- docker (prefixed: sshd and kubernetes have their own app and worker)
DOCKER_APP = "gogooku3-app"
DOCKER_WORKER = "gogooku3-worker"
DOCKER_SCHEDULER = "gogooku3-scheduler"
DOCKER_DEBUG = "gogooku3-debug"  # what the container-privileged fault leaves running

# -- moto
SERVICE = "t-developer-service"
TASK_FAMILY = "t-developer"
BAD_IMAGE_TAG = "2025.03"  # ecs-bad-revision's image: a tag the repository does not hold
TARGET_GROUP = "t-developer-tg"
LOG_GROUP = "/ecs/t-developer"
FAULT_ERRORS = 60
DB_GROUP = "t-developer-db"
UNROTATED_SECRET = "t-developer/openai-api-key"  # noqa: S105 - a secret's name

# -- kubernetes (prefixed: docker has an app too)
KUBERNETES_APP = "tekutoko-api"
NEXT_IMAGE = "registry.example/tekutoko-api:1.9.0"  # rollout-stuck: the release that hangs
HPA_MAX = 10
BACKUP = "tekutoko-db-backup"
CRASH_RESTARTS = 7  # pod-crashloop: past the checks' restart_count crit
MISSED_DAYS = 3  # cronjob-missed: the last run that happened, and succeeded

# -- backups
MISSING_ROLE = "legacy_etl"  # owns a table in the restore-fails dump; absent on restore
DYNAMODB_TABLE = "t-developer-projects"
TOO_MANY = 12  # dumps kept when the cleanup job stopped

# -- logs
PILED = 4  # old daily logs with logs-piling, and one batch log: the default --max-actions
PILED_FROM_DAYS = 10  # the newest of them is 10 days old, the oldest 13

# The faults written into the API server's state (opsverify.sandbox.kubernetes_state):
# every kubernetes fault but kubernetes-down, which starts no server.
KUBERNETES_STATE: dict[str, str] = {
    "pod-crashloop": f"one pod of {KUBERNETES_APP} is in CrashLoopBackOff "
                     f"({CRASH_RESTARTS} restarts): the deployment is one replica short and "
                     "BackOff warnings pile up",
    "deployment-degraded": f"two of {KUBERNETES_APP}'s three pods fail their readiness "
                           "probe: the deployment has one available replica",
    "rollout-stuck": f"the rollout of {NEXT_IMAGE} hangs: its first pod cannot be scheduled "
                     "and the deployment exceeded its progress deadline",
    "hpa-maxed": f"{KUBERNETES_APP}'s HPA is pinned at its maximum ({HPA_MAX} replicas, CPU "
                 "at 96 %)",
    "cronjob-missed": f"the nightly {BACKUP} CronJob has not run for {MISSED_DAYS} days",
}

# Component -> its faults, in runtime.COMPONENTS's order (the order of --sandbox-fault's help).
FAULTS_OF: dict[str, dict[str, str]] = {
    "postgres": {
        "db-down": "PostgreSQL is not started: its port refuses connections",
        "idle-connections": f"the application leaves {IDLE_SESSIONS} sessions idle in PostgreSQL",
        "stuck-run": "a run has been 'running' for 30 hours",
        "wal-archive-off": "PostgreSQL runs with archive_mode=off (switched off for a "
                           "maintenance window and never back on): no WAL reaches the archive",
        "pg-trust-auth": f"pg_hba.conf gains a line that trusts {APP_ROLE} from 127.0.0.1 "
                         "(added 'for a minute' while debugging), and is reloaded",
        "pg-connections-exhausted": "the application's pool holds 90 % of max_connections, "
                                    "each session idle in transaction (a missing commit)",
        "replication-slot-stale": f"the slot {STALE_SLOT} of a decommissioned replica is "
                                  f"left behind: inactive, it keeps {STALE_SLOT_SEGMENTS} "
                                  "WAL segments written since",
        "blocking-lock": f"a retraining job ({HOLDER_APP}) updated a row of models in a "
                         "transaction whose next statement hangs; the API's update of that "
                         f"row ({WAITER_APP}) waits for its lock",
        "dead-tuples": f"a worker's debug logging flooded {FLOODED_TABLE} with "
                       f"{FLOOD_ROWS} rows and the purge deleted them, with autovacuum "
                       "switched off on that table (for a bulk load, never back on): 75 % "
                       "of its rows are dead",
    },
    "postgres_replica": {
        "replica-broken": "the replica's replication password is stale (rotated on the "
                          "primary): it still answers queries but no longer streams WAL",
    },
    "redis": {
        "redis-down": "Redis is not started: its port refuses connections",
        "redis-bgsave-failed": "Redis's data directory disappears under it (a lost volume): "
                               "BGSAVE fails, and Redis refuses writes",
        "redis-no-auth": "Redis runs without a password (requirepass dropped from its "
                         "configuration): anyone who reaches the port is the default user",
        "redis-memory-full": f"Redis's cache fills {FULL_PCT:g} % of its maxmemory "
                             f"({MAXMEMORY_MB} MiB, noeviction): a little more and it "
                             "refuses writes",
        "redis-idle-clients": f"the application's pool leaves {IDLE_CLIENTS} connections "
                              "open and idle in Redis",
    },
    "sshd": {
        "service-stopped": f"the host's {SSHD_WORKER} service is stopped (its process killed)",
        "ssh-hostkey-changed": "known_hosts holds another key than the server's: the ssh "
                               "host target must refuse to connect",
        "ssh-root-login": "sshd is reloaded with PermitRootLogin yes",
    },
    "app": {
        "app-unhealthy": "the demo service answers /health with 503 and an unhealthy component",
        "slow-app": "the demo service takes 400 ms to answer every request",
        "redirect-broken": "the demo service answers /docs with 404 instead of redirecting "
                           "to /docs/ (a lost rewrite rule)",
        "metrics-disabled": "the demo service answers /metrics with 404 (exporter switched off)",
        "cert-expired": "the demo service's TLS certificate expired yesterday (a renewal job "
                        "that stopped running)",
        "tls-weak": "the demo service's TLS listener accepts TLS 1.0 and 1.1 (an old load "
                    "balancer policy, @SECLEVEL=0)",
        "headers-missing": "the demo service sends no security headers (HSTS, nosniff, CSP, "
                           "X-Frame-Options, Referrer-Policy: the middleware is gone)",
        "cors-wildcard": "the demo service reflects any Origin with credentials allowed",
        "auth-bypass": "the demo service answers /api/admin/stats with 200 to anyone (an "
                       "auth middleware that lost its route)",
        "cache-stale": "the demo service's search-results cache serves entries past their "
                       "TTL (its invalidation stopped): /health/detailed says cache stale",
    },
    "clickhouse": {
        "clickhouse-down": "ClickHouse is not started: its port refuses connections",
        "clickhouse-table-missing": f"table {DROPPED_TABLE} is dropped from the database after "
                                    "seeding",
        "clickhouse-quota-exhausted": "the monitoring user's query quota is used up: /ping "
                                      "answers, queries are refused",
    },
    "sqlite": {
        "sqlite-corrupt": "erpfts.db has a torn b-tree page (in the chunks_document index)",
    },
    "prometheus": {
        "prometheus-down": "Prometheus is not started: its port refuses connections",
        "prometheus-not-ready": "Prometheus hangs replaying its write-ahead log: "
                                "/-/ready answers 503",
        "alert-firing": f"an alert rule ({FAULT_ALERT}) fires in Prometheus",
        "scrape-target-unreachable": f"Prometheus scrapes a job ({DEAD_JOB}) whose port is closed",
        "slo-burning": "the demo service's seeded request history turns 3 % 5xx in its last "
                       "hour: the SLO's budget burns 30 times too fast",
    },
    "docker": {
        "docker-down": "the Docker engine is not started: its socket does not exist",
        "container-unhealthy": f"{DOCKER_APP}'s HEALTHCHECK fails: its readiness file (in its "
                               "tmpfs /tmp) is gone; a restart makes it anew",
        "container-restarting": f"{DOCKER_SCHEDULER} exits at start, so its restart policy "
                                "restarts it over and over",
        "container-stopped": f"{DOCKER_WORKER} has exited",
        "container-privileged": f"a debugging container, {DOCKER_DEBUG}, runs --privileged",
    },
    "moto": {
        "moto-down": "the moto server (S3 and AWS APIs) is not started: its port refuses "
                     "connections",
        "s3-prefix-missing": "every object under datasets/ is gone from the sandbox bucket",
        "ecs-degraded": f"the ECS service {SERVICE} runs 1 of its 2 desired tasks (its "
                        "deployment has a failed task)",
        "ecs-bad-revision": f"revision 2 of {TASK_FAMILY} (image tag {BAD_IMAGE_TAG}, which "
                            f"the repository does not hold) was rolled out to {SERVICE}: 1 "
                            "of its 2 desired tasks runs, its deployment has a failed task",
        "alb-target-stopped": f"an instance behind the ALB target group {TARGET_GROUP} is "
                              "stopped, so its target is not healthy",
        "alarm-firing": "the CloudWatch alarm t-developer-5xx is in ALARM",
        "log-errors": f"{FAULT_ERRORS} ERROR events land in the log group {LOG_GROUP}",
        "s3-public": "the sandbox bucket loses its public access block and its policy lets "
                     "anyone (*) read every object",
        "sg-open-db": f"the security group {DB_GROUP} admits PostgreSQL (5432) from "
                      "0.0.0.0/0",
        "secret-not-rotated": f"the Secrets Manager secret {UNROTATED_SECRET} exists with "
                              "rotation never enabled",
    },
    "kubernetes": {
        "kubernetes-down": "the Kubernetes API server is not started: its port refuses "
                           "connections",
        **KUBERNETES_STATE,
    },
    "backups": {
        "stale-backup": "the newest PostgreSQL dump is 3 days old: the nightly job stopped",
        "truncated-backup": "the newest ChromaDB tarball is cut mid-stream (its gzip header "
                            "is fine; its checksum was taken after the cut)",
        "empty-dump": "the newest dump in S3 is a valid pg_dump of the wrong, empty database",
        "corrupt-sqlite-backup": "the newest ERPFTS backup carries a torn index page (copied "
                                 "from a damaged file: its checksum matches)",
        "checksum-mismatch": "the newest PostgreSQL dump was rewritten after its .sha256 "
                             "sidecar was recorded",
        "retention-exceeded": f"{TOO_MANY} PostgreSQL dumps are kept: the cleanup job stopped",
        "restore-fails": f"the newest PostgreSQL dump has a table owned by role {MISSING_ROLE}, "
                         "which the restore server does not have",
        "wal-archive-failing": "PostgreSQL's WAL archive directory is gone: archive_command "
                               "fails",
        "dynamodb-pitr-off": f"point-in-time recovery is off on the DynamoDB table "
                             f"{DYNAMODB_TABLE}",
    },
    "logs": {
        "logs-piling": f"{PILED} daily logs {PILED_FROM_DAYS} to "
                       f"{PILED_FROM_DAYS + PILED - 1} days old, 17 MiB each, and an old "
                       "batch log pile up in logs/: nobody ran `find logs/ -mtime +7 "
                       "-delete` (logs/*.log over its 64 MiB)",
    },
    "history": {
        "disk-filling": "the sandbox's logs fill 70 % of their limit, after a week of growth "
                        "that fills it in 5 days (days-until-full trend: crit under 7)",
    },
}
FAULTS: dict[str, str] = {
    name: what for faults in FAULTS_OF.values() for name, what in faults.items()
}
