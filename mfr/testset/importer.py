"""``mfr testset import``: real aligned faces (PNG/JPEG files + manifest) into the shard format.

Every image must be a PNG or JPEG file of exactly 112x112 pixels in RGB mode;
anything else (another format, size or mode, an animated image, a file that
does not decode, a path leaving the images folder) is reported with its
manifest row (1 = first data row) and the reason, and nothing is written.
Each source file's sha256 is recorded in ``sources.sha256`` (``sha256sum``
format, so ``sha256sum -c`` checks the originals), the decoded pixels go
into hashed shards. Protocol files a challenge names come along (see
:func:`import_testset`).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from mfr.challenge import Challenge
from mfr.errors import InvalidInput
from mfr.manifest import read_manifest
from mfr.testset.format import DEFAULT_SHARD_SIZE, IMAGE_SHAPE, TestSet, TestSetWriter
from mfr.testset.layout import SOURCES_NAME
from mfr.testset.protocol_check import gather_protocol_files

ALLOWED_FORMATS = ("PNG", "JPEG")
SHOWN_ERRORS = 20
_CHUNK = 256  # rows decoded per step (in parallel)


@dataclass(frozen=True)
class RowError:
    row: int  # 1 = first data row of the manifest
    path: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} ({self.path}): {self.reason}"


class ImportRejected(InvalidInput):
    """Some images are not 112x112 RGB PNG/JPEG; ``rows`` lists every one."""

    code = "image_invalid"

    def __init__(self, rows: list[RowError]) -> None:
        shown = "; ".join(str(r) for r in rows[:SHOWN_ERRORS])
        more = f"; and {len(rows) - SHOWN_ERRORS} more" if len(rows) > SHOWN_ERRORS else ""
        super().__init__(f"{len(rows)} image(s) rejected: {shown}{more}")
        self.rows = rows


@dataclass
class _Decoded:
    pixels: np.ndarray | None
    sha256: str
    error: str | None


def _safe_path(images: Path, relative: str) -> Path | None:
    """The file under ``images``, or None when the path is absolute or climbs out."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if not relative or pure.is_absolute() or ".." in pure.parts:
        return None
    return images.joinpath(*pure.parts)


def decode_image(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(uint8 [112, 112, 3], None) for an acceptable image, else (None, reason)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ALLOWED_FORMATS:
                return None, f"format {image.format or 'unknown'}, expected PNG or JPEG"
            if getattr(image, "n_frames", 1) > 1:
                return None, f"animated {image.format} ({image.n_frames} frames), expected one image"
            if image.size != IMAGE_SHAPE[1::-1]:
                width, height = image.size
                return None, f"size {width}x{height}, expected 112x112"
            if image.mode != "RGB":
                return None, f"mode {image.mode}, expected RGB (3 x 8-bit channels, no alpha)"
            image.load()
            pixels = np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        return None, "not an image file PIL can identify"
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"cannot decode: {exc}"
    if pixels.shape != IMAGE_SHAPE:
        return None, f"decoded to shape {pixels.shape}, expected (112, 112, 3)"
    return pixels, None


def _load(images: Path, relative: str) -> _Decoded:
    path = _safe_path(images, relative)
    if path is None:
        return _Decoded(None, "", "path must be relative and stay inside the images folder")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Decoded(None, "", "file not found")
    except IsADirectoryError:
        return _Decoded(None, "", "is a folder, not a file")
    except OSError as exc:
        return _Decoded(None, "", f"cannot read: {exc.strerror}")
    pixels, error = decode_image(data)
    return _Decoded(pixels, hashlib.sha256(data).hexdigest(), error)


def _decoded_rows(images: Path, paths: tuple[str, ...], workers: int) -> Iterator[_Decoded]:
    # PIL releases the GIL while decoding, so threads decode in parallel;
    # map keeps manifest order.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), _CHUNK):
            yield from pool.map(lambda p: _load(images, p), paths[start:start + _CHUNK])


def import_testset(manifest_path: str | Path, images: str | Path, out: str | Path,
                   shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False,
                   name: str = "", workers: int | None = None,
                   challenge: Challenge | None = None) -> TestSet:
    """Decode, check and shard the manifest's images; raise :class:`ImportRejected` on bad rows.

    With a ``challenge``, the protocol files its protocols name are taken from beside the
    manifest, checked (:mod:`mfr.testset.protocol_check`, before any image is decoded)
    and stored in the test set under the same names; their hashes join the id.
    """
    manifest = read_manifest(manifest_path)
    images = Path(images)
    if not images.is_dir():
        raise InvalidInput(f"images folder {images} does not exist", code="images_missing")
    protocol_files = {} if challenge is None else gather_protocol_files(
        challenge, manifest, Path(manifest_path).parent, str(manifest_path))
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    source = {"kind": "import", "manifest": str(manifest_path), "images": str(images)}
    if challenge is not None:
        source["challenge"] = challenge.id
    errors: list[RowError] = []
    sources: list[str] = []
    with TestSetWriter(out, shard_size, source=source, overwrite=overwrite) as writer:
        for row, (relative, decoded) in enumerate(
                zip(manifest.paths, _decoded_rows(images, manifest.paths, workers)), start=1):
            if decoded.error:
                errors.append(RowError(row, relative, decoded.error))
                continue
            sources.append(f"{decoded.sha256}  {relative}\n")
            if not errors:  # after the first bad row only checking goes on
                writer.add(decoded.pixels)
        if errors:
            raise ImportRejected(errors)
        writer.add_file(SOURCES_NAME, "".join(sources).encode("utf-8"))
        for file_name, data in protocol_files.items():
            writer.add_protocol_file(file_name, data)
        return writer.finish(manifest, name=name or f"imported from {images}")


def export_images(testset: TestSet, out: str | Path) -> int:
    """Write every image at its manifest path under ``out`` (for viewing, round trips)."""
    out = Path(out)
    count = 0
    for shard in testset.shards:
        pixels = testset.read_shard(shard.index)
        for offset in range(shard.images):
            relative = testset.manifest.paths[shard.start + offset]
            path = _safe_path(out, relative)
            if path is None:
                raise InvalidInput(f"row {shard.start + offset + 1}: unsafe path {relative!r}",
                                   code="testset_invalid")
            path.parent.mkdir(parents=True, exist_ok=True)
            # Always PNG content (lossless), whatever the suffix: a round trip
            # through import gives back the same pixels.
            Image.fromarray(pixels[offset]).save(path, format="PNG")
            count += 1
    return count
