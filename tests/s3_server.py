"""A real S3-protocol server on 127.0.0.1 for tests and benchmarks: moto's ``moto_server`` in a subprocess.

Clients reach it exactly as a real bucket, through s3fs/botocore with an endpoint
URL. Credentials are checked: the server gets an IAM user whose access key is
exported as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then request signing is
enforced. moto cannot serve unsigned (anonymous) requests while it checks
signatures, so ``anonymous()`` turns checking off for the duration of a block."""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    return free_port()


class MotoServer:
    """``moto_server`` on a free port; ``start()`` returns once it answers, ``stop()`` ends it."""

    def __init__(self, request_log: str | None = None) -> None:
        self.request_log = request_log  # the server's access log (one line per HTTP request), if wanted
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.key_id = ""
        self.secret = ""

    def start(self, auth: bool = True) -> MotoServer:
        log = open(self.request_log, "ab") if self.request_log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=log,
        )
        if self.request_log:
            log.close()
        try:
            self._wait()
            if auth:
                self._create_user()
                self._set_auth(0)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def requests_logged(self) -> list[str]:
        """The access-log lines so far (``"GET /bucket/key HTTP/1.1" 200``), when started with ``request_log``."""
        with open(self.request_log, encoding="utf-8", errors="replace") as handle:
            return [line for line in handle if '"' in line and " HTTP/1.1" in line]

    def client(self, **kwargs):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.key_id or "setup", aws_secret_access_key=self.secret or "setup",
                            **kwargs)

    def _create_user(self) -> None:
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION,
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="actstore-test")
        iam.put_user_policy(UserName="actstore-test", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="actstore-test")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def _set_auth(self, unchecked_requests: float) -> float:
        """Check signatures after this many requests (0: from now on; inf: never); returns the previous setting."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=str(unchecked_requests).encode(),
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return float(json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])

    @contextlib.contextmanager
    def anonymous(self):
        """Serve unsigned requests (public buckets) inside this block."""
        previous = self._set_auth(float("inf"))
        try:
            yield self
        finally:
            self._set_auth(previous)

    def env(self) -> dict[str, str]:
        """The environment a client needs: the standard AWS variables, nothing actstore-specific."""
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": REGION}
