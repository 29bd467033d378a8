"""Unpacking an upload safely: a bare .onnx, or a zip holding one model.onnx.

Runs in the service process, on the archive's metadata only: sizes, names and
file types are checked before a single byte is inflated, and the one member
that is extracted is written under a name of our choosing and streamed with a
hard byte cap, so neither a path in the archive nor a lying header can make
the validator write outside its work directory or fill the disk.
"""

from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mfr.modelcheck.report import ValidationReport

MIB = 1024 * 1024
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SUPPORTED_COMPRESSION = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ZipPolicy:
    """Limits on an uploaded archive (the model's own size limit comes from the track)."""

    # More entries than any honest `zip model.zip model.onnx` (plus a README) needs.
    max_entries: int = 64
    # Inflation ratio above which a member counts as a compression bomb. Float32
    # weights compress by at most ~1.2x; only members over `ratio_floor_bytes`
    # are judged, small text files may compress far better.
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 * MIB
    # Declared size allowed for everything that is not the model.
    max_other_bytes: int = 64 * MIB


@dataclass(frozen=True)
class Upload:
    model_path: Path
    size: int


def is_zip(path: Path) -> bool:
    """A .zip by name, a .onnx by name, otherwise by the first bytes."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return True
    if suffix == ".onnx":
        return False
    with open(path, "rb") as fh:
        return fh.read(4) in ZIP_MAGIC


def open_upload(
    path: Path,
    workdir: Path,
    max_model_bytes: int,
    report: ValidationReport,
    policy: ZipPolicy = ZipPolicy(),
) -> Upload | None:
    """Return the model to validate, or None after adding the reason to ``report``."""
    if not is_zip(path):
        return Upload(path, path.stat().st_size)
    try:
        archive = zipfile.ZipFile(path)
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        report.add_error("zip_invalid", f"the upload is not a readable zip archive: {exc}")
        return None
    with archive:
        member = check_entries(entries, max_model_bytes, report, policy)
        if member is None:
            return None
        return _extract(archive, member, workdir / "model.onnx", max_model_bytes, report)


def check_entries(
    entries: list[zipfile.ZipInfo],
    max_model_bytes: int,
    report: ValidationReport,
    policy: ZipPolicy = ZipPolicy(),
) -> zipfile.ZipInfo | None:
    """The zip rules on an archive's entries (metadata only): the model's entry, or None
    after adding the reasons to ``report``. The gateway runs the same rules on upload."""
    if len(entries) > policy.max_entries:
        report.add_error(
            "zip_unsafe",
            f"the zip has {len(entries)} entries; at most {policy.max_entries} are accepted",
        )
        return None
    for info in entries:
        problem = _unsafe_entry(info, policy)
        if problem is not None:
            report.add_error("zip_unsafe", problem)
    for info in entries:
        if info.flag_bits & 0x1:
            report.add_error("zip_invalid", f"{info.filename!r} is encrypted; upload a plain zip")
        elif info.compress_type not in _SUPPORTED_COMPRESSION:
            report.add_error(
                "zip_invalid",
                f"{info.filename!r} uses compression method {info.compress_type}; "
                "use deflate (`zip model.zip model.onnx`)",
            )
    if report.errors:
        return None

    files = [i for i in entries if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    # Like the reference checker, only the archive's top level counts.
    models = [i for i in files if "/" not in i.filename and i.filename.endswith(".onnx")]
    others = [i for i in files if i not in models]
    other_bytes = sum(i.file_size for i in others)
    if other_bytes > policy.max_other_bytes:
        report.add_error(
            "zip_unsafe",
            f"files besides the model expand to {other_bytes / MIB:.1f} MB; "
            f"at most {policy.max_other_bytes / MIB:.0f} MB are accepted",
        )
        return None
    if not models:
        nested = [i.filename for i in files if i.filename.endswith(".onnx")]
        hint = (
            f" (found {_names(nested)} inside a folder: zip the file itself, "
            "`zip model.zip model.onnx`)"
            if nested
            else ""
        )
        report.add_error("zip_no_model", f"no .onnx file at the top level of the zip{hint}")
        return None
    if len(models) > 1:
        report.add_error(
            "zip_multiple_models",
            f"the zip holds {len(models)} .onnx files ({_names([m.filename for m in models])}); "
            "exactly one is accepted",
        )
        return None
    model = models[0]
    if model.file_size > max_model_bytes:
        report.model_size_mb = model.file_size / MIB
        report.add_error(
            "model_too_large",
            f"{model.filename} is {model.file_size / MIB:.3f} MB; "
            f"the track allows {max_model_bytes / MIB:.3f} MB",
        )
        return None
    if others:
        report.add_warning(
            "extra_files",
            f"ignored {len(others)} file(s) besides the model: {_names([o.filename for o in others])}",
        )
    return model


def _unsafe_entry(info: zipfile.ZipInfo, policy: ZipPolicy) -> str | None:
    name = info.filename
    parts = re.split(r"[/\\]", name)
    if "\x00" in name:
        return f"entry name {name!r} contains a NUL byte"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return f"entry {name!r} has an absolute path"
    if ".." in parts:
        return f"entry {name!r} points outside the archive (path traversal)"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return f"entry {name!r} is a symbolic link"
    # Python's zipfile.writestr stores permission bits with no file type at all:
    # that is a plain file. Only an explicit non-file type (device, FIFO, ...) is unsafe.
    file_type = stat.S_IFMT(mode)
    if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
        return f"entry {name!r} is not a regular file"
    if info.file_size > policy.ratio_floor_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > policy.max_ratio:
            return (
                f"entry {name!r} inflates {ratio:.0f}x ({info.compress_size} bytes to "
                f"{info.file_size / MIB:.1f} MB); at most {policy.max_ratio:.0f}x is accepted "
                "(compression bomb)"
            )
    return None


def _extract(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    target: Path,
    max_model_bytes: int,
    report: ValidationReport,
) -> Upload | None:
    cap = min(member.file_size, max_model_bytes)
    written = 0
    try:
        with archive.open(member) as src, open(target, "wb") as dst:
            while chunk := src.read(MIB):
                written += len(chunk)
                if written > cap:
                    report.add_error(
                        "zip_unsafe",
                        f"{member.filename} inflates past its declared {member.file_size} bytes",
                    )
                    return None
                dst.write(chunk)
    except Exception as exc:  # noqa: BLE001 - zlib/bz2/lzma errors, bad CRC, truncated data
        report.add_error("zip_invalid", f"cannot extract {member.filename}: {exc}")
        return None
    return Upload(target, written)


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
