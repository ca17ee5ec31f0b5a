#!/bin/sh
# Run by the postgres image on the first start of an empty volume (/docker-entrypoint-initdb.d):
# the roles of deploy/postgres/init-roles.sql, with the query service's password from
# SM_QUERY_DB_PASSWORD (docker-compose.yml sets a local default, k8s/ reads it from the
# postgres Secret). The SQL is mounted outside the init directory so the image does not run it
# without its variable.
set -eu
: "${SM_QUERY_DB_PASSWORD:?set SM_QUERY_DB_PASSWORD: the password of sm_query, the query service login role}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v query_password="$SM_QUERY_DB_PASSWORD" -f /etc/sm/init-roles.sql
