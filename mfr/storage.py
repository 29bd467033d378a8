"""Object storage behind a small interface, over the ``minio`` SDK.

Any S3 service is interchangeable (SeaweedFS on one machine and in the dev
k8s overlay; AWS S3, R2, Ceph RGW, MinIO AIStor): only plain S3 calls are used
(no S3 Select, no bucket notifications). Everything streams: uploads go
in multipart parts, downloads are read in chunks, hashes are computed on the
way, so no large object is ever held whole in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from mfr.errors import NotFound
from mfr.settings import StorageSettings

PART_SIZE = 16 * 1024 * 1024  # multipart part size: bounded memory per upload
CHUNK = 1024 * 1024
# The readiness check's own client: no retries, short timeouts (the SDK's default client
# retries five times and waits up to five minutes, right for transfers, not for a probe).
PROBE_TIMEOUT = urllib3.Timeout(connect=1.0, read=1.5)


@dataclass(frozen=True)
class Buckets:
    models: str
    testsets: str
    features: str
    results: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Buckets:
        return cls(*(f"{prefix}{kind}" for kind in ("models", "testsets", "features", "results")))

    def all(self) -> tuple[str, ...]:
        return (self.models, self.testsets, self.features, self.results)


@dataclass(frozen=True)
class ObjectRef:
    """Where an object is (or is to be written), with its sha256 when known."""

    bucket: str
    key: str
    sha256: str = ""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str


class _HashingReader(io.RawIOBase):
    """Wraps a readable stream; hashes and counts what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


class ObjectStore:
    """The platform's S3 access: four buckets, streaming put/get, sha256 on the way."""

    def __init__(self, client: Minio, buckets: Buckets, probe: Minio | None = None) -> None:
        self.client = client
        self.buckets = buckets
        self.probe = probe or client

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> ObjectStore:
        def client(http: urllib3.PoolManager | None = None) -> Minio:
            return Minio(
                settings.s3_endpoint,
                access_key=settings.s3_access_key.get_secret_value(),
                secret_key=settings.s3_secret_key.get_secret_value(),
                secure=settings.s3_secure,
                region=settings.s3_region,
                http_client=http,
            )

        probe = urllib3.PoolManager(timeout=PROBE_TIMEOUT, retries=False, maxsize=2,
                                    cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
        return cls(client(), Buckets.with_prefix(settings.bucket_prefix), client(probe))

    def ensure_buckets(self) -> None:
        for bucket in self.buckets.all():
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as exc:  # another process made it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def ready(self) -> bool:
        """The four buckets exist (a readiness check: fails within seconds, never hangs)."""
        return all(self.probe.bucket_exists(b) for b in self.buckets.all())

    # --- writing -------------------------------------------------------------
    def put_stream(self, bucket: str, key: str, stream: BinaryIO, length: int = -1,
                   content_type: str = "application/octet-stream") -> StoredObject:
        """Upload from a stream in multipart parts (unknown length allowed)."""
        reader = _HashingReader(stream)
        self.client.put_object(bucket, key, reader, length=length, part_size=PART_SIZE,
                               content_type=content_type)
        return StoredObject(bucket, key, reader.size, reader.sha.hexdigest())

    def put_file(self, bucket: str, key: str, path: str | Path) -> StoredObject:
        with open(path, "rb") as handle:
            return self.put_stream(bucket, key, handle, length=os.fstat(handle.fileno()).st_size)

    def put_bytes(self, bucket: str, key: str, data: bytes) -> StoredObject:
        return self.put_stream(bucket, key, io.BytesIO(data), length=len(data))

    # --- reading -------------------------------------------------------------
    def iter_chunks(self, bucket: str, key: str, chunk: int = CHUNK) -> Iterator[bytes]:
        try:
            response = self.client.get_object(bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                raise NotFound(f"object {bucket}/{key} not found", code="object_not_found") from None
            raise
        try:
            yield from response.stream(chunk)
        finally:
            response.close()
            response.release_conn()

    def get_file(self, bucket: str, key: str, path: str | Path,
                 expect_sha256: str | None = None) -> StoredObject:
        """Download to ``path`` (via a temporary name), verifying the hash when given.

        The temporary name is unique, beside ``path``: fetches of one object at once (threads
        of a service answering two calls, pods sharing a cache volume) each write their own
        file, and each rename is atomic. Nothing is left behind when the fetch fails.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        sha = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "xb") as out:
                for data in self.iter_chunks(bucket, key):
                    sha.update(data)
                    size += len(data)
                    out.write(data)
            digest = sha.hexdigest()
            if expect_sha256 and digest != expect_sha256:
                raise NotFound(
                    f"object {bucket}/{key}: sha256 {digest[:12]}… differs from "
                    f"{expect_sha256[:12]}…", code="object_corrupt")
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredObject(bucket, key, size, digest)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return b"".join(self.iter_chunks(bucket, key))

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.stat_object(bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise
        return True

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        return [o.object_name for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)]

    def delete(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)
