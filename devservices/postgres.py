"""A local PostgreSQL for development and tests: Debian's PostgreSQL (initdb, pg_ctl) on loopback, its data in one
folder, the password of its one database user from the environment.

    export PGPASSWORD=<a password of your choice>
    python -m devservices.postgres [--dir pg_data] [--port 5432] [--user mlflow] [--database mlflow]
                                                                                        # or: make postgres

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged ``postgres`` user that Debian's
package creates (the data folder is handed to it); as anyone else it runs as that user. It listens on 127.0.0.1 only,
with its socket inside the data folder. The superuser ``postgres`` may connect through that socket only (``trust``:
the folder's owner); over TCP every user needs its password (``scram-sha-256``). The first start creates the user and
the database with the password in PGPASSWORD; clients then need PGPASSWORD too (libpq reads it), never a password in
a URL. Data persists in ``--dir`` between runs.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SUPERUSER = "postgres"
SERVICE_USER = "postgres"  # the unprivileged account Debian's postgresql package creates; used when we are root
PG_HBA = """\
# written by devservices.postgres
local   all   postgres                  trust
host    all   all        127.0.0.1/32   scram-sha-256
"""


def bindir() -> Path:
    """The folder of initdb and pg_ctl: Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL's server programs (initdb, pg_ctl) are missing: install Debian's package "
        "(`apt-get install postgresql`; `make test-tools` does it where it can)"
    )


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LocalPostgres:
    def __init__(self, data_dir: Path, port: int, user: str, password: str, database: str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port, self.user, self.password, self.database = port, user, password, database
        self.bin = bindir()
        self.owner = SERVICE_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _as_owner(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.owner, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)

    def _checked(self, *args: str, **kwargs) -> str:
        done = self._as_owner(*args, **kwargs)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
        return done.stdout

    def _initialize(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(self.owner)
            except KeyError:
                raise RuntimeError(
                    f"PostgreSQL refuses to run as root and there is no {self.owner!r} user to run it as: install "
                    "Debian's postgresql package (it creates the user), or run this as an unprivileged user"
                ) from None
            shutil.chown(self.data_dir, self.owner)
            if subprocess.run(["runuser", "-u", self.owner, "--", "test", "-x", str(self.data_dir)]).returncode:
                raise RuntimeError(
                    f"the {self.owner!r} user cannot reach {self.data_dir}: every folder above it must be "
                    f"traversable by that user (chmod o+x), or use a data folder elsewhere (--dir)"
                )
        self.data_dir.chmod(0o700)
        self._checked("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust", "--no-instructions")
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir / "pg_hba.conf", self.owner)

    def start(self) -> LocalPostgres:
        self._initialize()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}"
        log = self.data_dir / "server.log"
        self._checked("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
        self._create_user_and_database()
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser through the folder's socket (statements on stdin: no secret in argv)."""
        args = ("psql", "-h", str(self.data_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", database)
        return self._checked(*args, "-v", "ON_ERROR_STOP=1", "-qAt", "-f", "-", input=sql)

    def dump(self, database: str) -> str:
        """Everything ``database`` holds, as SQL (pg_dump as the superuser, through the folder's socket)."""
        return self._checked("pg_dump", "-h", str(self.data_dir), "-p", str(self.port), "-U", SUPERUSER, database)

    def _create_user_and_database(self) -> None:
        roles = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {quoted(self.user)};")
        verb = "ALTER" if roles.strip() else "CREATE"
        self.psql(f'{verb} ROLE "{self.user}" LOGIN PASSWORD {quoted(self.password)};')
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = {quoted(self.database)};").strip():
            self.psql(f'CREATE DATABASE "{self.database}" OWNER "{self.user}";')  # its own statement

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would, for tests of a database that goes away)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._as_owner("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devservices.postgres",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", default="pg_data", help="the data folder (default ./pg_data)")
    parser.add_argument("--port", type=int, default=5432, help="port on 127.0.0.1 (default 5432)")
    parser.add_argument("--user", default="mlflow", help="the database user MLflow connects as (default mlflow)")
    parser.add_argument("--database", default="mlflow", help="the database (default mlflow)")
    args = parser.parse_args(argv)
    password = os.environ.get("PGPASSWORD")
    if not password:
        parser.error("set PGPASSWORD first: the user gets that password, and clients read the same variable")
    server = LocalPostgres(Path(args.dir), args.port, args.user, password, args.database)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.start()
    print(
        f"PostgreSQL on 127.0.0.1:{args.port} (database {args.database!r}, user {args.user!r}, data in "
        f"{server.data_dir}); Ctrl-C stops it.\nIn another shell with the same PGPASSWORD:\n"
        f"  python main.py backend=postgresql backend.port={args.port} mode=server-config serve.run=true",
        flush=True,
    )
    try:
        while (server.data_dir / "postmaster.pid").exists():
            time.sleep(1)  # the server runs detached (pg_ctl); this wrapper lives as long as it does
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
