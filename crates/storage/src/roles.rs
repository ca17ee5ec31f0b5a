//! The database roles of the platform, as the migrations grant to them.
//!
//! - the owner (`sm` locally) runs the migrations and the projectors: it owns the tables, so
//!   row-level security does not apply to it and it writes every tenant;
//! - [`READER_ROLE`] (`NOLOGIN`) holds what the query service may do: read the projections
//!   under the tenant policies, and move model versions between stages;
//! - the query service logs in as a role that is a member of it and owns nothing
//!   (`sm_query` locally, see `deploy/postgres/init-roles.sql`), so a query that forgets to
//!   scope itself still sees no other tenant's rows.

/// The role whose privileges the query service uses (and sets inside each transaction).
pub const READER_ROLE: &str = "sm_reader";

/// SQL that creates [`READER_ROLE`] if it is missing and lets it use the current schema.
/// Roles are cluster-wide, so it is created only if missing, by whoever may; otherwise the
/// error says what a superuser has to run.
pub fn reader_role_sql() -> String {
    format!(
        "DO $$
         BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
                 CREATE ROLE {READER_ROLE} NOLOGIN;
             END IF;
         EXCEPTION WHEN insufficient_privilege THEN
             RAISE EXCEPTION 'role {READER_ROLE} is missing and % may not create it: as a superuser run CREATE ROLE {READER_ROLE} NOLOGIN; GRANT {READER_ROLE} TO %;', current_user, current_user;
         END $$;
         DO $$ BEGIN
             EXECUTE format('GRANT USAGE ON SCHEMA %I TO {READER_ROLE}', current_schema());
         END $$;\n"
    )
}

/// Whether the connected role escapes row-level security on `table`: a superuser, a role
/// with `BYPASSRLS`, or a member of the table's owner. One row, one boolean.
pub const BYPASSES_RLS_SQL: &str =
    "SELECT r.rolsuper OR r.rolbypassrls OR pg_has_role(current_user, c.relowner, 'MEMBER')
     FROM pg_roles r, pg_class c
     WHERE r.rolname = current_user AND c.oid = to_regclass($1)";
