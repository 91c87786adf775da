#!/usr/bin/env bash
# PostgreSQL's server programs for `make postgres` and the @team scenarios, from Debian's packages (`postgresql`):
# initdb, pg_ctl, psql and pg_dump in /usr/lib/postgresql/<version>/bin, and the unprivileged `postgres` user the
# server runs as when we are root. Run by `make test-tools`. Where they cannot be installed, it says why and exits 0:
# the @team scenarios then skip, printing the reason.
set -uo pipefail
skip() { echo "postgres-tools: $* (the @team scenarios will be skipped)"; exit 0; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo > /dev/null; then sudo -n "$@"; else return 1; fi; }

if ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 && ! command -v initdb > /dev/null; then
  command -v apt-get > /dev/null || skip "PostgreSQL is missing and this is not a Debian-like system with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq --no-install-recommends postgresql > /dev/null 2>&1 \
    || { as_root apt-get update -qq > /dev/null 2>&1 \
         && as_root apt-get install -y -qq --no-install-recommends postgresql > /dev/null 2>&1; } \
    || skip "could not install postgresql with apt-get (root and Debian's package repository are needed)"
fi
initdb="$(ls /usr/lib/postgresql/*/bin/initdb 2> /dev/null | sort -V | tail -1)"
echo "postgres-tools: $("${initdb:-initdb}" --version): ready"
