"""Backups of the archive's PostgreSQL: continuous WAL archiving and base backups to S3 with barman-cloud, their
restore to a point in time, and an exporter that gives Prometheus the age of the newest base backup and of the
newest archived WAL segment (docs/OPERATIONS.md, "Recovery after a database loss")."""
