"""A throwaway S3 API server for tests and benchmarks: moto's server on a free loopback port.

    with MotoS3Server() as s3:
        s3.env()                      # AWS_* variables pointing boto/s3fs at it (fake credentials)
        s3.create_bucket("pe-landing")
        s3.client().put_object(...)   # a boto3 client, e.g. to damage an object behind our back

It is a real HTTP server speaking the S3 API (PutObject with ``If-None-Match``, ListObjectsV2, ...),
not a patched client: the code under test goes through botocore's wire protocol as against AWS.
Moto checks ``If-None-Match: *`` before storing without a lock, so its refusal is not atomic the way
S3's is; hundreds of rounds of 16 racing writers never saw two winners, but AWS remains the arbiter.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import boto3
import s3fs
from moto.server import ThreadedMotoServer

#: Fake, fixed credentials: moto accepts any; nothing real is ever needed or logged.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "pe-test-access-key", "AWS_SECRET_ACCESS_KEY": "pe-test-secret-key"}
REGION = "us-east-1"


class MotoS3Server:
    """moto's ``ThreadedMotoServer`` on ``host`` and a free port (port 0: the OS picks one)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
        self._port: int | None = None

    def start(self) -> MotoS3Server:
        # One line per request otherwise: tests and benchmarks would drown in werkzeug's access log.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        self._port = self._server.get_host_and_port()[1]
        # fsspec caches filesystems by their options, not by the environment: an S3FileSystem made
        # against an earlier server (another port) would otherwise be handed back.
        s3fs.S3FileSystem.clear_instance_cache()
        return self

    def stop(self) -> None:
        self._server.stop()
        s3fs.S3FileSystem.clear_instance_cache()

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._port is None:
            raise RuntimeError("MotoS3Server is not started")
        return f"http://{self.host}:{self._port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that send botocore (and so s3fs) here, with fake credentials."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            # No shared config or credentials file of the machine's user may leak in.
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (explicit settings: independent of the process env)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name
