"""storage=s3: the object store's checks, and what MLflow's S3 client needs from the environment.

``check(storage)`` takes seconds and runs before any MLflow run is opened or any model is loaded. It reaches the
endpoint, authenticates, finds the bucket (creating it when ``storage.create_bucket`` is true), then writes and
deletes one small probe object under the prefix. Each failure is a StageError that names the endpoint and says what
went wrong: unreachable, unknown access key, wrong secret, missing bucket, no permission, or a server that fails.

Credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optionally AWS_SESSION_TOKEN),
never from the config. ``use_for_mlflow(storage)`` exports MLFLOW_S3_ENDPOINT_URL and AWS_DEFAULT_REGION, which
MLflow's S3 artifact repository reads.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from lifecycle.stage import StageError

KEY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
TIMEOUTS = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
PROBE = ".lifecycle-write-check"
MISSING_BUCKET = ("NoSuchBucket", "404", "NotFound")  # the codes S3 servers answer for a bucket that does not exist
SERVER_FAULTS = ("InternalError", "ServiceUnavailable", "500", "503")  # the store is failing, not the request
CAUSES = {  # error code -> what went wrong, in words a user can act on
    "InvalidAccessKeyId": "the access key in AWS_ACCESS_KEY_ID is not known there",
    "SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY does not match the access key (wrong secret)",
    **dict.fromkeys(MISSING_BUCKET, "bucket {bucket!r} does not exist; create it, or set storage.create_bucket=true"),
    **dict.fromkeys(("AccessDenied", "403"), "these credentials may not read and write s3://{bucket}/{prefix}"),
    **dict.fromkeys(
        SERVER_FAULTS,
        "the server itself failed ({code}); see its log. A local SeaweedFS (`make s3`) refuses every write once "
        "its disk has less than 1% free",
    ),
}


def _where(storage: Any) -> str:
    return storage.endpoint_url or "AWS S3"


def client(storage: Any):
    """A boto3 S3 client for ``storage`` with short timeouts, credentials from the environment only."""
    missing = [name for name in KEY_VARS if not os.environ.get(name)]
    if missing:
        raise StageError(
            f"storage=s3 needs {' and '.join(missing)} in the environment for the S3 endpoint {_where(storage)} "
            "(credentials never come from the config): export them, e.g. the ones `make s3` was started with."
        )
    return boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN"),
        config=TIMEOUTS,
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def explain(exc: Exception, storage: Any) -> str:
    """One sentence for a boto3 failure: the endpoint and what went wrong."""
    where = f"S3 endpoint {_where(storage)}"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the {where}: is the server running? (`make s3` starts one on this machine)"
    if isinstance(exc, NoCredentialsError):
        return f"no credentials for the {where}: export {' and '.join(KEY_VARS)}"
    if isinstance(exc, ClientError):
        code = _code(exc)
        cause = CAUSES.get(code, f"{code}: {exc.response.get('Error', {}).get('Message', exc)}")
        return f"{where}: " + cause.format(bucket=storage.bucket, prefix=storage.prefix, code=code)
    return f"{where}: {type(exc).__name__}: {exc}"


def _ensure_bucket(s3, storage: Any) -> None:
    try:
        s3.list_objects_v2(Bucket=storage.bucket, Prefix=storage.prefix, MaxKeys=1)
    except ClientError as exc:
        if _code(exc) not in MISSING_BUCKET or not storage.create_bucket:
            raise
        s3.create_bucket(Bucket=storage.bucket)


def check(storage: Any) -> None:
    """Endpoint, credentials, bucket and write permission, in seconds; StageError that says which failed."""
    s3 = client(storage)
    probe = f"{storage.prefix.strip('/')}/{PROBE}-{uuid.uuid4().hex}".lstrip("/")
    try:
        _ensure_bucket(s3, storage)
        s3.put_object(Bucket=storage.bucket, Key=probe, Body=b"ok")
        s3.delete_object(Bucket=storage.bucket, Key=probe)
    except (BotoCoreError, ClientError) as exc:
        raise StageError(f"storage=s3 check failed: {explain(exc, storage)}") from None


def use_for_mlflow(storage: Any) -> None:
    """The environment MLflow's S3 artifact repository reads (this process and the subprocesses it starts)."""
    if storage.endpoint_url:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = storage.endpoint_url
    os.environ.setdefault("AWS_DEFAULT_REGION", storage.region)
