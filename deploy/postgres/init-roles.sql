-- Roles the platform needs besides the one the services connect as (sm), created on the first
-- start of an empty data directory: docker-compose.yml mounts this file into
-- /docker-entrypoint-initdb.d, k8s/postgres.yaml holds the same SQL in the ConfigMap
-- postgres-init (tests/deployment.rs checks they match). deploy/local/stack runs the same.
--
-- sm_reader: the NOLOGIN role the query service switches to in every tenant-scoped read
-- (services/query/src/db.rs, `scoped`), so the policies apply: sm must be a member of it.
-- The projector's migration 8 (services/projector/src/schema.rs, row_level_security) grants it
-- SELECT on the read models and creates the tenant policies; it creates the role itself only
-- if it may, and never grants it, so a database where sm is not a superuser needs this.
--
-- Idempotent, plain SQL (no psql commands). An existing data directory never runs it again:
-- there, run it once as a superuser (psql -f deploy/postgres/init-roles.sql).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sm_reader') THEN
        CREATE ROLE sm_reader NOLOGIN;
    END IF;
END $$;
GRANT sm_reader TO sm;
