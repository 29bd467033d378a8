"""The on-disk test-set format: decoded images in hashed shards, plus the manifest.

A test set is a directory::

    TESTSET/
      manifest.csv          DESIGN.md section 7 format; row i = image i
      testset.json          id, counts, shard size, image shape, per-shard sha256
      shards/shard-00000.npy  uint8 [n, 112, 112, 3] RGB, C order, n = shard_size
      ...                     (the last shard may be shorter)
      lfw_pairs.csv ...       protocol files a challenge names (DESIGN.md 3.1), if any

Images are decoded once (at import or synthesis) so embedding never decodes a
JPEG; a shard is a plain ``.npy`` file, readable with ``np.load`` (memory-mapped
or not). Integrity: every shard's sha256 (of the whole file) is in
testset.json and is checked whenever the embedder reads the shard; the test-set
id is a hash over the manifest's bytes, the shard hashes and the protocol
files' hashes, so equal ids mean equal content. docs/testsets.md describes the format for people.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Self

import numpy as np

from mfr.errors import InvalidInput
from mfr.manifest import Manifest, read_manifest, write_manifest
from mfr.testset.layout import (
    INFO_NAME,
    MANIFEST_NAME,
    SHARD_DIR,
    protocol_file_name_problem,
    shard_name,
)

FORMAT = "mfr-testset/1"
IMAGE_SHAPE = (112, 112, 3)
DEFAULT_SHARD_SIZE = 2048  # 77 MB of pixels: a unit of work and of resume
HASH_CHUNK = 8 * 1024 * 1024


class TestSetCorrupt(InvalidInput):
    """A shard or the manifest does not match the hashes recorded in testset.json."""

    __test__ = False
    code = "testset_corrupt"


def testset_id(manifest_sha256: str, shard_sha256s: list[str],
               protocol_files: Mapping[str, str] | None = None) -> str:
    """Content hash of a test set: sha256 over the manifest hash, the shard hashes and the
    protocol files' hashes.

    ``sha256("mfr-testset/1\\n" + manifest_sha256 + "\\n" + shard_0 + "\\n" + ...)``
    (hex digests, one per line, in shard order), followed, only when there are protocol
    files, by a line ``protocol-files`` and one line ``SHA256  NAME`` per file in name
    order (UTF-8). A test set without protocol files keeps the id it always had.
    """
    lines = [FORMAT, manifest_sha256, *shard_sha256s]
    if protocol_files:
        lines += ["protocol-files", *(f"{protocol_files[name]}  {name}"
                                      for name in sorted(protocol_files))]
    return hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while data := handle.read(HASH_CHUNK):
            sha.update(data)
    return sha.hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    index: int
    file: str  # relative to the test-set directory
    start: int  # first image index
    images: int
    sha256: str
    bytes: int

    @property
    def stop(self) -> int:
        return self.start + self.images


class TestSet:
    """A test set on local disk. Cheap to open: shards are read (and verified) on demand."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / INFO_NAME
        try:
            self.info = json.loads(info_path.read_text("utf-8"))
        except OSError as exc:
            raise InvalidInput(f"{self.root} is not a test set: cannot read {INFO_NAME} "
                               f"({exc.strerror})", code="testset_invalid") from None
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{info_path}: {exc}", code="testset_invalid") from None
        if self.info.get("format") != FORMAT:
            raise InvalidInput(f"{info_path}: format {self.info.get('format')!r}, "
                               f"expected {FORMAT!r}", code="testset_invalid")
        try:
            start = 0
            shards = []
            for index, entry in enumerate(self.info["shards"]):
                shards.append(ShardInfo(index, str(entry["file"]), start, int(entry["images"]),
                                        str(entry["sha256"]), int(entry["bytes"])))
                start += int(entry["images"])
            self.shards: tuple[ShardInfo, ...] = tuple(shards)
            self.protocol_files: dict[str, str] = {
                str(name): str(sha) for name, sha in self.info.get("protocol_files", {}).items()}
            expected_id = testset_id(str(self.info["manifest_sha256"]),
                                     [s.sha256 for s in self.shards], self.protocol_files)
            images = self.images
            _ = self.id
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{info_path}: malformed ({exc!r})", code="testset_invalid") \
                from None
        if start != images:
            raise InvalidInput(f"{info_path}: shards hold {start} images, "
                               f"images = {images}", code="testset_invalid")
        for shard in self.shards:  # names are fixed, so a file can never point elsewhere
            if shard.file != shard_name(shard.index):
                raise InvalidInput(f"{info_path}: shard {shard.index} is {shard.file!r}, "
                                   f"expected {shard_name(shard.index)!r}",
                                   code="testset_invalid")
        for name, sha in self.protocol_files.items():  # a name leads reads and downloads
            problem = protocol_file_name_problem(name) or (
                None if len(sha) == 64 else "has no sha256")
            if problem:
                raise InvalidInput(f"{info_path}: protocol file {name!r} {problem}",
                                   code="testset_invalid")
        self._verified_files: set[str] = set()
        if expected_id != self.id:
            raise TestSetCorrupt(f"{info_path}: id {self.id[:12]}… does not match its "
                                 f"hashes ({expected_id[:12]}…)")

    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def images(self) -> int:
        return int(self.info["images"])

    @property
    def shard_size(self) -> int:
        return int(self.info["shard_size"])

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @cached_property
    def manifest(self) -> Manifest:
        """The manifest, checked against its recorded hash."""
        digest = file_sha256(self.manifest_path)
        if digest != self.info["manifest_sha256"]:
            raise TestSetCorrupt(f"{self.manifest_path}: sha256 {digest[:12]}… differs from "
                                 f"the recorded {self.info['manifest_sha256'][:12]}…")
        manifest = read_manifest(self.manifest_path)
        if len(manifest) != self.images:
            raise TestSetCorrupt(f"{self.manifest_path}: {len(manifest)} rows, "
                                 f"test set has {self.images} images")
        return manifest

    def protocol_file(self, name: str) -> Path:
        """The path of protocol file ``name`` (as the challenge names it), checked against
        its recorded sha256 on first use; ``protocol_file_missing`` when the test set was
        not imported with it."""
        recorded = self.protocol_files.get(name)
        if recorded is None:
            held = ", ".join(sorted(self.protocol_files)) or "none"
            raise InvalidInput(f"test set {self.id[:12]}… has no protocol file {name!r} "
                               f"(it has: {held}); import it with the challenge that names it",
                               code="protocol_file_missing")
        path = self.root / name
        if name not in self._verified_files:
            try:
                digest = file_sha256(path)
            except FileNotFoundError:
                raise TestSetCorrupt(f"{path}: protocol file {name!r} is missing") from None
            if digest != recorded:
                raise TestSetCorrupt(f"{path}: sha256 {digest[:12]}… differs from the "
                                     f"recorded {recorded[:12]}…")
            self._verified_files.add(name)
        return path

    def shard_path(self, index: int) -> Path:
        return self.root / self.shards[index].file

    def read_shard(self, index: int, verify: bool = True) -> np.ndarray:
        """Load one shard into memory as uint8 [n, 112, 112, 3], checking its sha256.

        One pass over the file: it is read into a buffer that is hashed and then
        viewed as the array, so verification costs no second read.
        """
        info = self.shards[index]
        path = self.shard_path(index)
        try:
            size = path.stat().st_size
            if size != info.bytes:
                raise TestSetCorrupt(f"{path}: {size} bytes, expected {info.bytes}")
            buffer = bytearray(size)
            with open(path, "rb", buffering=0) as handle:
                view = memoryview(buffer)
                done = 0
                while done < size:
                    got = handle.readinto(view[done:done + HASH_CHUNK])
                    if not got:
                        raise TestSetCorrupt(f"{path}: truncated at {done} bytes")
                    done += got
        except FileNotFoundError:
            raise TestSetCorrupt(f"{path}: shard {index} is missing") from None
        if verify:
            digest = hashlib.sha256(buffer).hexdigest()
            if digest != info.sha256:
                raise TestSetCorrupt(f"{path}: sha256 {digest[:12]}… differs from the "
                                     f"recorded {info.sha256[:12]}…")
        return _npy_from_buffer(buffer, path, info.images)

    def open_shard(self, index: int) -> np.ndarray:
        """Memory-map one shard without verifying it (random access, viewing)."""
        array = np.load(self.shard_path(index), mmap_mode="r")
        _check_shard_array(array, self.shard_path(index), self.shards[index].images)
        return array

    def verify(self) -> None:
        """Check the manifest and every shard against the recorded hashes."""
        _ = self.manifest
        self._verified_files.clear()
        for name in self.protocol_files:
            self.protocol_file(name)
        for shard in self.shards:
            digest = file_sha256(self.root / shard.file)
            if digest != shard.sha256:
                raise TestSetCorrupt(f"{self.root / shard.file}: sha256 {digest[:12]}… differs "
                                     f"from the recorded {shard.sha256[:12]}…")

    def image(self, index: int) -> np.ndarray:
        """One image (uint8 [112, 112, 3]), for viewing and tests."""
        for shard in self.shards:
            if shard.start <= index < shard.stop:
                return np.array(self.open_shard(shard.index)[index - shard.start])
        raise IndexError(index)


def _npy_from_buffer(buffer: bytearray, path: Path, images: int) -> np.ndarray:
    import io

    handle = io.BytesIO(buffer)
    version = np.lib.format.read_magic(handle)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(handle)
    offset = handle.tell()
    if fortran or dtype != np.uint8 or tuple(shape) != (images, *IMAGE_SHAPE):
        raise TestSetCorrupt(f"{path}: array {shape} {dtype}, expected ({images}, 112, 112, 3) uint8")
    return np.frombuffer(buffer, dtype=np.uint8, offset=offset).reshape(shape)


def _check_shard_array(array: np.ndarray, path: Path, images: int) -> None:
    if array.dtype != np.uint8 or array.shape != (images, *IMAGE_SHAPE):
        raise TestSetCorrupt(f"{path}: array {array.shape} {array.dtype}, "
                             f"expected ({images}, 112, 112, 3) uint8")


class TestSetWriter:
    """Builds a test set: images are appended in manifest order and cut into shards.

    Writes into a temporary directory beside ``out`` and renames it into place
    on :meth:`finish`, so a test set directory is either complete or absent.
    """

    __test__ = False

    def __init__(self, out: str | Path, shard_size: int = DEFAULT_SHARD_SIZE,
                 source: dict | None = None, overwrite: bool = False) -> None:
        if shard_size < 1:
            raise InvalidInput("shard size must be at least 1", code="testset_invalid")
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()) and not overwrite:
            raise InvalidInput(f"{self.out} exists and is not empty", code="testset_exists")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        (self.tmp / SHARD_DIR).mkdir()
        self.shard_size = shard_size
        self.source = source or {}
        self._pending = np.empty((shard_size, *IMAGE_SHAPE), dtype=np.uint8)
        self._fill = 0
        self._shards: list[dict] = []
        self._extra: dict[str, str] = {}
        self._protocol_files: dict[str, str] = {}
        self.images = 0

    def add(self, images: np.ndarray) -> None:
        """Append uint8 [n, 112, 112, 3] images (or one [112, 112, 3] image)."""
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise InvalidInput(f"images must be uint8 [n, 112, 112, 3], got {images.shape} "
                               f"{images.dtype}", code="testset_invalid")
        done = 0
        while done < len(images):
            take = min(self.shard_size - self._fill, len(images) - done)
            self._pending[self._fill:self._fill + take] = images[done:done + take]
            self._fill += take
            done += take
            if self._fill == self.shard_size:
                self._flush()

    def add_file(self, name: str, data: bytes) -> None:
        """An extra file in the test-set folder (e.g. the import's source hashes)."""
        (self.tmp / name).write_bytes(data)
        self._extra[name] = hashlib.sha256(data).hexdigest()

    def add_protocol_file(self, name: str, data: bytes) -> None:
        """A protocol file a challenge names (path relative to the manifest's folder); its
        sha256 goes into the test-set id."""
        problem = protocol_file_name_problem(name)
        if problem:
            raise InvalidInput(f"protocol file {name!r} {problem}", code="testset_invalid")
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._protocol_files[name] = hashlib.sha256(data).hexdigest()

    def _flush(self) -> None:
        if not self._fill:
            return
        name = shard_name(len(self._shards))
        path = self.tmp / name
        np.save(path, self._pending[:self._fill])
        self._shards.append({"file": name, "images": self._fill, "sha256": file_sha256(path),
                             "bytes": path.stat().st_size})
        self.images += self._fill
        self._fill = 0

    def finish(self, manifest: Manifest, name: str = "") -> TestSet:
        """Write manifest and testset.json, move the directory into place, and open it."""
        self._flush()
        if len(manifest) != self.images:
            self.abort()
            raise InvalidInput(f"manifest has {len(manifest)} rows but {self.images} images "
                               "were written", code="testset_invalid")
        write_manifest(self.tmp / MANIFEST_NAME, manifest)
        manifest_sha = file_sha256(self.tmp / MANIFEST_NAME)
        tags = Counter(tag for row in manifest.tags for tag in row)
        info = {
            "format": FORMAT,
            "id": testset_id(manifest_sha, [s["sha256"] for s in self._shards],
                             self._protocol_files),
            "name": name,
            "images": self.images,
            "identities": len(set(manifest.identities)),
            "image_shape": list(IMAGE_SHAPE),
            "dtype": "uint8",
            "channel_order": "RGB",
            "layout": "NHWC",
            "shard_size": self.shard_size,
            "manifest_sha256": manifest_sha,
            "tags": dict(sorted(tags.items())),
            "source": self.source,
            "files": self._extra,
            **({"protocol_files": dict(sorted(self._protocol_files.items()))}
               if self._protocol_files else {}),
            "shards": self._shards,
        }
        (self.tmp / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n", "utf-8")
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return TestSet(self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()
