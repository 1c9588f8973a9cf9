"""Wait for the local S3 endpoint and create a bucket: run before Tansu in its supervised line.

Usage: python -m scripts.localstack.ensure_bucket BUCKET [TIMEOUT_S]
Reads AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (all required,
so boto3 never falls back to a cloud default). supervisord starts the programs at once, and Tansu
needs its bucket before its first write, hence this step.
"""

from __future__ import annotations

import os
import sys
import time


def ensure_bucket(bucket: str, timeout: float = 60.0) -> None:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT"],
        region_name=os.environ["AWS_REGION"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if bucket not in names:
                s3.create_bucket(Bucket=bucket)
            return
        except Exception as exc:  # not up yet: retry until the deadline
            if time.monotonic() > deadline:
                raise SystemExit(f"ensure_bucket: {bucket!r} not created: {exc}") from exc
            time.sleep(0.5)


def main(argv: list[str]) -> None:
    if not 1 <= len(argv) <= 2:
        raise SystemExit(__doc__)
    ensure_bucket(argv[0], float(argv[1]) if len(argv) == 2 else 60.0)


if __name__ == "__main__":
    main(sys.argv[1:])
