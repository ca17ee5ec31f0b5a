-- Roles the platform needs besides the owner the migrations and projectors connect as (sm),
-- created on the first start of an empty data directory. deploy/postgres/init-roles.sh runs
-- this file (docker-compose.yml mounts both, k8s/postgres.yaml holds both in the ConfigMap
-- postgres-init; tests/deployment.rs checks they match); deploy/local/stack runs it on up.
--
-- sm_reader: NOLOGIN, what the query service may do. The projector's migration 8
-- (services/projector/src/schema.rs) grants it SELECT on the read models under the tenant
-- policies, the registry's migration 3 SELECT and UPDATE on the model registry; they create
-- the role only if they may, and never grant it, so a database where sm is not a superuser
-- needs this. sm is a member (the query service sets the role in each transaction).
--
-- sm_query: the login role of the query service. A member of sm_reader that owns nothing, so
-- row-level security applies to every statement it runs, scoped or not (the service reports
-- not ready when logged in as a role that escapes it). Its password is the psql variable
-- query_password.
--
-- Idempotent. An existing data directory never runs it again: there, run it once as a
-- superuser (psql -v query_password=... -f deploy/postgres/init-roles.sql).
\set ON_ERROR_STOP on
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sm_reader') THEN
        CREATE ROLE sm_reader NOLOGIN;
    END IF;
END $$;
GRANT sm_reader TO sm;
SELECT 'CREATE ROLE sm_query' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sm_query') \gexec
ALTER ROLE sm_query WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD :'query_password';
GRANT sm_reader TO sm_query;
