#!/usr/bin/env bash
# PostgreSQL's server programs for `make postgres` and the @team scenarios, from Debian's packages (`postgresql`):
# initdb, pg_ctl, psql and pg_dump in /usr/lib/postgresql/<version>/bin, and the unprivileged `postgres` user the
# server runs as when we are root. Run by `make test-tools`. Where they cannot be installed, it says why and exits 0:
# the @team scenarios then skip, printing the reason.
set -uo pipefail
TOOL=postgres-tools SKIPS="the @team scenarios will be skipped"
# shellcheck source=scripts/apt.sh
source "$(dirname "$0")/apt.sh"

if ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 && ! command -v initdb > /dev/null; then
  apt_install PostgreSQL postgresql
fi
initdb="$(ls /usr/lib/postgresql/*/bin/initdb 2> /dev/null | sort -V | tail -1)"
echo "postgres-tools: $("${initdb:-initdb}" --version): ready"
