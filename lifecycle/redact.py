"""Keep secrets out of logs, MLflow params, tags and artifacts.

A value is secret when its key looks like a credential, or when it equals the value of a credential environment
variable (so a secret interpolated into the config from the environment is caught under any key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
SECRET_KEY = re.compile(r"(secret|password|passwd|token|api[_-]?key|access[_-]?key|credential|private[_-]?key)", re.I)
# whole words of a variable's name: AWS_SECRET_ACCESS_KEY, HF_TOKEN, OPENAI_API_KEY; not TOKENIZERS_PARALLELISM
SECRET_ENV = re.compile(r"(^|_|PG)(SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|ACCESS_KEY|CREDENTIALS?)(_|$)", re.I)
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<password>[^@\s/]+)(?=@)", re.I)
MIN_SECRET_LEN = 6  # shorter values ("true", "1") would mask ordinary text


def secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    environ = os.environ if environ is None else environ
    return {v for k, v in environ.items() if SECRET_ENV.search(k) and len(v) >= MIN_SECRET_LEN}


def redact(value: Any, secrets: set[str] | None = None, key: str = "") -> Any:
    """A copy of ``value`` (nested dicts/lists/scalars) with every secret replaced by ``***``."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, Mapping):
        return {k: redact(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets, key) for v in value]
    if value is None:
        return None
    if key and SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        value = URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, value)  # postgresql://user:<password>@host
    return value


def redact_text(text: str, secrets: set[str] | None = None) -> str:
    return redact(text, secrets)
