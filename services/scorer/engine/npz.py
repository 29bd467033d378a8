"""The engine's wire format for plans and tile partials: an ``.npz`` of arrays plus a JSON
``meta`` string, read without pickles (a partial from storage is data, never code)."""

from __future__ import annotations

import io
import json

import numpy as np

from mfr.errors import InvalidInput


def pack(meta: dict | str, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    text = meta if isinstance(meta, str) else json.dumps(meta)
    np.savez(buffer, meta=np.array(text), **arrays)
    return buffer.getvalue()


def unpack(data: bytes, what: str, code: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays); a damaged document is ``InvalidInput(code)`` naming ``what`` it should be."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            return meta, {name: archive[name] for name in archive.files if name != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInput(f"not {what}: {exc}", code=code) from None
