"""Zip archives for the validator's corpus: safe, unsafe, broken, bombs that only *declare*
gigabytes."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable

from mfr.onnxzoo.hostile import valid


def zipped(members: dict[str, bytes | Callable[[], bytes]], *,
           symlinks: tuple[str, ...] = ()) -> Callable[[], bytes]:  # fmt: skip
    def build() -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in members.items():
                data = content() if callable(content) else content
                info = zipfile.ZipInfo(name, date_time=(2021, 6, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                if name in symlinks:
                    info.external_attr = (0o120777 << 16)
                    info.create_system = 3
                else:
                    info.external_attr = (0o100644 << 16)
                archive.writestr(info, data)
        return buffer.getvalue()

    return build


def declared_bomb() -> bytes:
    """A zip whose model.onnx *declares* 4 GB uncompressed (central directory patched)."""
    data = bytearray(zipped({"model.onnx": valid()})())
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 0xFFFFFFF0)
    return bytes(data)


def corrupt_member() -> bytes:
    """A readable archive whose deflate stream is damaged: extraction fails its CRC."""
    data = bytearray(zipped({"model.onnx": valid()})())
    start = 30 + len("model.onnx")  # local header + name: deflate data follows
    for i in range(start + 200, start + 260):
        data[i] ^= 0x5A
    return bytes(data)


def truncated_zip() -> bytes:
    data = zipped({"model.onnx": valid()})()
    return data[: len(data) // 2]


def readme() -> bytes:
    return b"our team's submission\n"
