"""Receiving model.zip: multipart parsed as it arrives, the file streamed to object storage.

Nothing is held whole in memory or written to local disk: the request body is
fed chunk by chunk to a streaming multipart parser; the file part goes through
a small bounded queue to a thread that uploads it to S3 in multipart parts.
The size is capped early (``Content-Length`` before a byte is read, then the
running count), and the zip is checked at once from what a zip keeps at its
end: the central directory (names, sizes, types of every entry), which the
last :data:`TAIL_BYTES` of the stream hold. Those entries go through the
validator's own zip rules (``mfr.modelcheck.archive``), so the gateway and
the validator can never disagree about what a safe archive is. Form fields and
the file name are refused with ``invalid_characters`` when they hold a control
character, and a body without its closing boundary (cut short) is ``form_invalid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import threading
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.characters import refuse_control_characters
from gateway.errors import HttpError, TooLarge
from mfr.errors import InvalidInput
from mfr.storage import ObjectStore, StoredObject

MIB = 1024 * 1024
TAIL_BYTES = 1 * MIB  # holds the central directory of any archive the validator accepts
FLUSH_BYTES = 1 * MIB  # hand the uploader thread 1 MiB at a time
QUEUE_DEPTH = 4  # chunks in flight: memory per upload <= (depth + 1) MiB + one S3 part
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, headers and the small fields


def file_cap(max_model_bytes: int) -> int:
    """Bytes a zip of a model at the track's limit may take: the model, headers, deflate's worst case."""
    return max_model_bytes + max_model_bytes // 1000 + MIB


class _Aborted(Exception):
    pass


class _QueueReader(io.RawIOBase):
    """The uploader thread's side: ``read`` pulls chunks the request handler pushed."""

    def __init__(self, chunks: queue.Queue) -> None:
        self.chunks = chunks
        self.pending = b""
        self.eof = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while not self.pending and not self.eof:
            item = self.chunks.get()
            if item is None:
                self.eof = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self.pending = item
        if n is None or n < 0:
            n = len(self.pending)
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


class S3Sink:
    """Streams bytes to one S3 object from a thread; the async side only enqueues."""

    def __init__(self, store: ObjectStore, bucket: str, key: str) -> None:
        self.store = store
        self.bucket = bucket
        self.key = key
        self.chunks: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.result: StoredObject | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"upload-{key}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.store.put_stream(self.bucket, self.key, _QueueReader(self.chunks),
                                                content_type="application/zip")
        except BaseException as exc:  # noqa: BLE001 - reported to the request handler
            self.error = exc

    async def put(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        await asyncio.to_thread(self.chunks.put, data)

    async def finish(self) -> StoredObject:
        await asyncio.to_thread(self.chunks.put, None)
        await asyncio.to_thread(self.thread.join)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    async def abort(self) -> None:
        """Stop the upload (S3 aborts its multipart upload) and remove anything written."""
        if self.thread.is_alive():
            try:
                self.chunks.put_nowait(_Aborted("upload aborted"))
            except queue.Full:
                await asyncio.to_thread(self._drain_and_abort)
            await asyncio.to_thread(self.thread.join)
        await asyncio.to_thread(self.discard)

    def _drain_and_abort(self) -> None:
        while True:
            try:
                self.chunks.get_nowait()
            except queue.Empty:
                break
        self.chunks.put(_Aborted("upload aborted"))

    def discard(self) -> None:
        discard(self.store, self.bucket, self.key)


def discard(store: ObjectStore, bucket: str, key: str) -> None:
    """Remove an upload that will not become a submission (absent is fine)."""
    with contextlib.suppress(Exception):
        store.delete(bucket, key)


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    head: bytes = b""
    tail: bytearray = field(default_factory=bytearray)
    stored: StoredObject | None = None
    complete: bool = False  # the closing boundary arrived: the body is not cut short


class _FormReader:
    """The multipart parser's callbacks: small fields are kept, the file part is counted,
    its head and tail kept, and its bytes handed on through ``outgoing``."""

    def __init__(self, form: ReceivedForm) -> None:
        self.form = form
        self.outgoing = bytearray()
        self.name: str | None = None
        self.is_file = False
        self.buffer = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.form_bytes = 0

    def callbacks(self) -> dict:
        return {"on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data, "on_part_end": self.on_part_end,
                "on_end": self.on_end}

    def count_form_bytes(self, n: int) -> None:
        # Everything but the file's bytes (part headers, small fields), over all parts: without
        # it a body with no Content-Length could grow memory without bound, field by field.
        self.form_bytes += n
        if self.form_bytes > FORM_OVERHEAD:
            raise InvalidInput("the form's fields and part headers are too long",
                               code="form_invalid")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.count_form_bytes(end - start)
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.count_form_bytes(end - start)
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field = bytearray()
        self.header_value = bytearray()

    def on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        self.is_file = self.name == "file"
        if self.is_file:
            if self.form.filename is not None:
                raise InvalidInput("the form has more than one part named 'file'",
                                   code="form_invalid")
            filename = disposition.get(b"filename", b"").decode("utf-8", "replace")
            self.form.filename = refuse_control_characters(filename, "the file name")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        form = self.form
        if self.is_file:
            if len(form.head) < 4:
                form.head += piece[:4 - len(form.head)]
            form.size += len(piece)
            form.tail += piece
            if len(form.tail) > TAIL_BYTES:
                del form.tail[:len(form.tail) - TAIL_BYTES]
            self.outgoing.extend(piece)
        else:
            self.count_form_bytes(len(piece))
            self.buffer += piece
            if len(self.buffer) > FORM_OVERHEAD:
                raise InvalidInput(f"form field {self.name!r} is too long", code="form_invalid")

    def on_part_end(self) -> None:
        if not self.is_file and self.name:
            name = refuse_control_characters(self.name, "a form field's name")
            value = bytes(self.buffer).decode("utf-8", "replace").strip()
            self.form.fields[name] = refuse_control_characters(value, f"form field {name!r}")
        self.name, self.is_file, self.buffer, self.headers = None, False, bytearray(), {}

    def on_end(self) -> None:
        self.form.complete = True


async def receive_upload(body: AsyncIterator[bytes], content_type: str, sink_for,
                         cap_for) -> ReceivedForm:
    """Parse a multipart body; stream the part named ``file`` into ``sink_for()``.

    ``cap_for(fields)`` gives the byte cap of the file given the fields seen so
    far (the track decides it; before the track field arrives, the largest cap).
    """
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidInput("send multipart/form-data with the fields track and file",
                           code="not_multipart")
    form = ReceivedForm()
    reader = _FormReader(form)
    parser = MultipartParser(boundary, reader.callbacks())
    outgoing = reader.outgoing
    sink: S3Sink | None = None
    try:
        async for chunk in body:
            _parse(parser.write, chunk)
            cap = cap_for(form.fields)
            if form.size > cap:
                raise TooLarge(f"the upload exceeds {cap / MIB:.1f} MB, the most a zip of a model "
                               "within the track's size limit can take")
            if len(outgoing) >= FLUSH_BYTES:
                sink = sink or sink_for()
                await sink.put(bytes(outgoing))
                outgoing.clear()
        _parse(parser.finalize)
        if not form.complete:
            # python-multipart's finalize() does not check this: a cut-off body would be
            # stored as if whole (the file's last bytes silently missing).
            raise InvalidInput("the multipart body ends before its closing boundary "
                               "(was the upload cut short?)", code="form_invalid")
        if form.filename is None:
            raise InvalidInput("the form has no part named 'file'", code="form_invalid")
        sink = sink or sink_for()
        if outgoing:
            await sink.put(bytes(outgoing))
        form.stored = await sink.finish()
    except BaseException:
        if sink is not None:
            await sink.abort()
        raise
    return form


def _parse(step, *args) -> None:
    """One step of the multipart parser; a malformed body is the client's error (422), not a 500."""
    try:
        step(*args)
    except MultipartParseError as exc:
        raise InvalidInput(f"the multipart body is malformed: {exc}", code="form_invalid") from None


class _TailFile(io.RawIOBase):
    """A seekable view of a file of ``size`` bytes of which only the last ones are known."""

    def __init__(self, size: int, tail: bytes) -> None:
        self.size = size
        self.tail = tail
        self.start = size - len(tail)
        self.position = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, n: int = -1) -> bytes:
        if self.position < self.start:
            raise OSError("the zip's central directory is larger than the gateway accepts")
        end = self.size if n is None or n < 0 else min(self.size, self.position + n)
        out = self.tail[self.position - self.start:end - self.start]
        self.position += len(out)
        return out


def zip_findings(form: ReceivedForm, max_model_bytes: int) -> list[dict]:
    """The validator's zip rules on the archive's entries; [] when the zip looks acceptable."""
    from mfr.modelcheck.archive import ZIP_MAGIC, ZipPolicy, check_entries
    from mfr.modelcheck.report import ValidationReport

    report = ValidationReport()
    if form.head[:4] not in ZIP_MAGIC:
        hint = " (zip it: `zip model.zip model.onnx`)" if form.head[:4] != b"" else ""
        return [{"code": "zip_invalid", "message": f"the upload is not a zip archive{hint}"}]
    try:
        with zipfile.ZipFile(_TailFile(form.size, bytes(form.tail))) as archive:
            entries = archive.infolist()
    except OSError as exc:
        return [{"code": "zip_unsafe", "message": str(exc)}]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        return [{"code": "zip_invalid", "message": f"the upload is not a readable zip archive: {exc}"}]
    check_entries(entries, max_model_bytes, report, ZipPolicy())
    return [{"code": f.code, "message": f.message} for f in report.errors]


def rejected(findings: list[dict]) -> HttpError:
    first = findings[0]
    return HttpError(422, first["code"], first["message"], extra={"errors": findings})
