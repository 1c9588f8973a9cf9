"""An S3 bucket (SeaweedFS locally, any S3-compatible store in production) through pyarrow.

Every client gets an explicit endpoint, region and keys: without them S3 clients go looking
for credentials and the region at the cloud's metadata address, and nothing the project runs
may send traffic there. Objects are written whole and never changed afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from services.core.errors import NotFound, Unavailable

SCHEME = "s3://"


@dataclass(frozen=True, kw_only=True)
class ObjectStore:
    """`root` (``s3://bucket/prefix``) on the S3 endpoint `endpoint` (``http://host:port``).

    Paths given to the methods are relative to `root`; failures raise `Unavailable` naming
    the store.
    """

    root: str
    endpoint: str
    region: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.root.startswith(SCHEME) or not self.root[len(SCHEME):].strip("/"):
            raise ValueError(f"an object store root is s3://bucket[/prefix], got {self.root!r}")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"an S3 endpoint is http(s)://host[:port], got {self.endpoint!r}")

    @property
    def bucket(self) -> str:
        return self.root[len(SCHEME):].split("/", 1)[0]

    def uri(self, path: str) -> str:
        """The s3:// URI of `path`."""
        return f"{self.root.rstrip('/')}/{path}"

    def relative(self, uri: str) -> str:
        """`uri`'s path under the root; ValueError when it is not under it."""
        prefix = self.root.rstrip("/") + "/"
        if not uri.startswith(prefix):
            raise ValueError(f"{uri} is not under {self.root}")
        return uri[len(prefix):]

    def _key(self, path: str) -> str:
        return self.uri(path)[len(SCHEME):]

    def filesystem(self) -> pafs.S3FileSystem:
        url = urlsplit(self.endpoint)
        return pafs.S3FileSystem(
            access_key=self.access_key, secret_key=self.secret_key, region=self.region,
            endpoint_override=url.netloc, scheme=url.scheme, connect_timeout=5,
            request_timeout=60, allow_bucket_creation=True)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise Unavailable(f"object store {self.root} at {self.endpoint} failed to "
                              f"{action}: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (a production bucket exists already)."""
        with self._errors("create its bucket"):
            fs = self.filesystem()
            if fs.get_file_info(self.bucket).type == pafs.FileType.NotFound:
                fs.create_dir(self.bucket)

    def exists(self, path: str) -> bool:
        with self._errors(f"look up {path}"):
            return bool(self.filesystem().get_file_info(self._key(path)).type
                        == pafs.FileType.File)

    def read(self, path: str) -> bytes:
        """The object's bytes; NotFound when there is none."""
        data = self.read_if_exists(path)
        if data is None:
            raise NotFound(f"{self.uri(path)} does not exist")
        return data

    def read_if_exists(self, path: str) -> bytes | None:
        with self._errors(f"read {path}"):
            try:
                with self.filesystem().open_input_stream(self._key(path)) as stream:
                    return bytes(stream.readall())
            except FileNotFoundError:
                return None

    def write(self, path: str, data: bytes) -> None:
        with self._errors(f"write {path}"), self.filesystem().open_output_stream(
                self._key(path)) as stream:
            stream.write(data)

    def delete_tree(self, path: str) -> None:
        """Remove everything under `path` (nothing when it is not there)."""
        with self._errors(f"delete {path}"):
            self.filesystem().delete_dir_contents(self._key(path), missing_dir_ok=True)
