"""Where Tune keeps checkpoints and experiment state: a local directory or S3.

Credentials are never part of the config: boto3 and pyarrow read them from the
environment or the instance profile.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Optional
from urllib.parse import urlencode, urlparse

from tuner import _ray
from tuner.config import ConfigError, StorageConfig

S3_CONNECT_TIMEOUT_S = 5


class StorageError(ConfigError):
    """Storage that cannot be used; the message says what to fix."""


def storage_path(cfg: StorageConfig) -> str:
    """``RunConfig.storage_path`` for this storage (pyarrow URI for S3)."""
    if cfg.kind == "local":
        return os.path.abspath(cfg.path)
    query: dict[str, str] = {}
    if cfg.endpoint_url:
        url = urlparse(cfg.endpoint_url)
        query = {"endpoint_override": url.netloc, "scheme": url.scheme}
    if cfg.region:
        query["region"] = cfg.region
    uri = f"s3://{cfg.bucket}/{cfg.prefix.strip('/')}"
    return f"{uri}?{urlencode(query)}" if query else uri


def s3_client(cfg: StorageConfig) -> Any:  # a botocore S3 client
    import boto3
    from botocore.config import Config as BotoConfig

    # A fresh session: boto3's default one caches the first credentials it resolved in this process.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        region_name=cfg.region,
        config=BotoConfig(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=10, retries={"max_attempts": 2}),
    )


def check(cfg: StorageConfig) -> None:
    """Fail fast, in one line, when the bucket cannot be reached or read."""
    if cfg.kind != "s3":
        return
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = cfg.endpoint_url or "AWS"
    try:
        s3_client(cfg).head_bucket(Bucket=cfg.bucket)
    except NoCredentialsError as exc:
        raise StorageError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or use an instance profile"
        ) from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        hint = {
            "404": "does not exist: create it or fix storage.bucket",
            "NoSuchBucket": "does not exist: create it or fix storage.bucket",
            "403": "refused the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            "AccessDenied": "refused the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        }.get(code, f"answered {code}")
        raise StorageError(f"S3 bucket {cfg.bucket!r} at {where} {hint}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 at {where} is unreachable ({type(exc).__name__}): check storage.endpoint_url") from exc


def experiment_path(cfg: StorageConfig, name: str) -> str:
    """The experiment directory Tune writes to and restores from (query kept last)."""
    base, _, query = storage_path(cfg).partition("?")
    path = f"{base.rstrip('/')}/{name}"
    return f"{path}?{query}" if query else path


TRAIN_CHECKPOINT_KEY = "checkpoint_path"  # ray.tune.integration.ray_train: a multi-worker trial's newest checkpoint


def checkpoint_uri(checkpoint: Any, result: Mapping[str, Any], experiment: str) -> Optional[str]:
    """Where a trial's newest checkpoint is: Tune's own, or (a multi-worker trial, whose checkpoints are its Ray
    Train run's) the one its last result names; ``s3://`` when the experiment is on S3."""
    path = checkpoint.path if checkpoint is not None else result.get(TRAIN_CHECKPOINT_KEY)
    if not path:
        return None
    return f"s3://{path}" if experiment.startswith("s3://") and not str(path).startswith("s3://") else str(path)


AWS_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def keep_credentials_out_of_ray() -> None:
    """Stop Ray Tune from copying AWS credentials into every trial's runtime_env.

    Ray's runtime-env agent writes runtime_envs to its log in plain text, so the
    copy would put the secret key on disk. Trials get credentials where the
    driver does instead: a local cluster's workers inherit the driver's
    environment, a cloud worker has its instance profile.
    """

    _ray.stop_propagating_env(frozenset(AWS_SECRET_ENV))


class OneLineStorageErrors(logging.Filter):
    """Shorten Ray's storage tracebacks to what failed and why; Ray retries the sync by itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not (record.exc_info or "Traceback" in message):
            return True
        detail = message.strip().splitlines()[-1]
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        what = message.strip().splitlines()[0].rstrip(":")
        record.msg = f"{what}: {detail} (retried at the next sync)"
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def shorten_ray_storage_errors() -> None:
    _ray.filter_storage_logs(OneLineStorageErrors())
