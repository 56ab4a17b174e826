#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 for a shared MLflow tracking server (the tests, or a team's machine):
# installs Debian's `postgresql` if missing, creates a cluster in its own folder on its own port (the
# distribution's cluster on 5432 is left alone), a login role and a database for MLflow, and prints the
# SQLAlchemy URL. Idempotent: when the server already answers, it only makes sure the role and database
# exist. Run as root (apt-get, and the server runs as the `postgres` user) or as the owner of the folder.
#
#   bash scripts/local-postgres.sh          # → postgresql://mlflow:mlflow@127.0.0.1:55432/mlflow
#   mlflow server --backend-store-uri "$(bash scripts/local-postgres.sh)" \
#       --artifacts-destination /srv/mlartifacts --serve-artifacts --host 0.0.0.0 --port 5000
#
# Settings (environment): LAMBDAOPT_PG_PORT (55432), LAMBDAOPT_PG_DATA (/var/lib/lambdaopt-postgres),
# LAMBDAOPT_PG_USER / LAMBDAOPT_PG_PASSWORD / LAMBDAOPT_PG_DB (mlflow / mlflow / mlflow).
set -euo pipefail
PORT=${LAMBDAOPT_PG_PORT:-55432}
DATA=${LAMBDAOPT_PG_DATA:-/var/lib/lambdaopt-postgres}
ROLE=${LAMBDAOPT_PG_USER:-mlflow}
PASSWORD=${LAMBDAOPT_PG_PASSWORD:-mlflow}
DB=${LAMBDAOPT_PG_DB:-mlflow}

say() { echo "local-postgres: $*" >&2; }

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
    if [ "$(id -u)" != 0 ]; then say "PostgreSQL is not installed: run this script as root once"; exit 1; fi
    say "installing postgresql (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql > /dev/null
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

# As root, the server and its files belong to `postgres` (PostgreSQL refuses to run as root).
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# Local socket in the data folder, trusted: only the owner can reach it; TCP needs the password.
psql_admin() { as_owner "$BIN/psql" -h "$DATA" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    if [ ! -s "$DATA/PG_VERSION" ]; then
        say "creating a cluster in $DATA"
        mkdir -p "$DATA"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA"
        chmod 700 "$DATA"
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            --encoding=UTF8 --locale=C.UTF-8 > /dev/null
    fi
    say "starting the server on 127.0.0.1:$PORT"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA -c max_connections=200" \
        start > /dev/null
fi

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    psql_admin -c "CREATE ROLE \"$ROLE\" LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE \"$DB\" OWNER \"$ROLE\""
fi
echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
