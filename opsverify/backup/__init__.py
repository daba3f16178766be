"""Backup inspectors, level by level: presence and retention (L1), checksums (L2), structure
read to the end (L3), restore drills (L4), and the service-side backups of PostgreSQL, Redis,
DynamoDB and S3. Free of pytest; the checks in ``checks/backup/`` judge what these return."""
