"""An S3-compatible object storage on loopback for tests: moto's server (PyPI ``moto[server]``).

It checks request signatures (``INITIAL_NO_AUTH_ACTION_COUNT``: the first
few requests make an IAM user and its keys, every later one must be signed
with them), so a test can tell right keys from wrong ones, as MinIO or Ceph
RGW would. distribution's S3 driver (Debian's docker-registry 2.8) works
against it: multipart uploads, path-style buckets, v4 signatures.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from support import testbed

SETUP_ACTIONS = 3  # create user, create access key, attach policy: unsigned; everything after is checked


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def client(self, secret_key: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key)

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self) -> list[str]:
        """Every key in every bucket (to see what the registries wrote)."""
        client = self.client()
        found = []
        for bucket in client.list_buckets()["Buckets"]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
            found += [f"{bucket['Name']}/{o['Key']}" for page in pages for o in page.get("Contents", [])]
        return found

    def stop(self) -> None:
        testbed.stop_process(self.process)


def moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"  # the venv's, where install-deps.sh puts it
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if not found:
        raise testbed.MissingComponent("moto_server is not installed: run scripts/install-deps.sh "
                                       "(pip extra 'test': moto[server])")
    return found


def start_s3(directory: Path, timeout: float = 60) -> S3Server:
    """moto_server on a free loopback port, with one IAM user whose keys it then requires."""
    import boto3

    directory.mkdir(parents=True, exist_ok=True)
    port = testbed.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
    log = open(directory / "moto.log", "wb")
    process = subprocess.Popen([moto_server(), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:  # a TCP connect, not a request: requests would use up the unsigned setup actions
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start: {(directory / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.2)
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="registry")
    key = iam.create_access_key(UserName="registry")["AccessKey"]
    iam.put_user_policy(UserName="registry", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    return S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], process)
