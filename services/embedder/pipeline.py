"""The embedding pipeline: read and preprocess, infer, write, overlapped.

Three stages joined by bounded queues, so a stage never runs more than a few
batches ahead and memory stays flat whatever the test set's size::

    reader thread        read a shard (one pass: read + sha256 check), cut it
                         into batches, preprocess each into a reusable float32
                         buffer: (x - mean) / std, NHWC uint8 -> NCHW float32
    calling thread       runner.run(batch) -> features        (onnxruntime)
    writer thread        gather a shard's features, hand the finished shard to
                         ``on_shard`` (which writes it: file or object store)

onnxruntime and numpy release the GIL in their heavy loops, so the stages run
in parallel; inference never waits for a read or a write unless those are
slower than it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mfr.errors import Unavailable
from mfr.testset.format import IMAGE_SHAPE, TestSet

QUEUE_DEPTH = 3  # batches in flight between two stages
_DONE = object()


def preprocess(images: np.ndarray, mean: float, std: float,
               out: np.ndarray | None = None) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW ``(x - mean) / std``, computed in float32.

    Exactly what the validator reports and what a direct onnxruntime run does:
    ``(images.astype(float32).transpose(0, 3, 1, 2) - float32(mean)) / float32(std)``.
    """
    n = len(images)
    if out is None:
        out = np.empty((n, 3, *IMAGE_SHAPE[:2]), dtype=np.float32)
    target = out[:n]
    np.subtract(images.transpose(0, 3, 1, 2), np.float32(mean), out=target, dtype=np.float32)
    np.divide(target, np.float32(std), out=target)
    return target


@dataclass
class _Batch:
    shard: int
    start: int  # row inside the shard
    rows: int
    buffer: np.ndarray  # float32 [capacity, 3, 112, 112]; rows valid


class Cancelled(Unavailable):
    """The embedding was cancelled (client gone, shutdown); finished shards are kept."""

    code = "embedding_cancelled"


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Pipeline:
    """Embeds the given shards of ``testset`` with ``run``; see the module docstring.

    ``run`` maps float32 [n, 3, 112, 112] to float32 [n, D]. ``pad_batches``
    pads a short last batch to full size (constant shapes: no re-tuning of
    CUDA kernels) and drops the padding's rows.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], testset: TestSet,
                 mean: float, std: float, batch_size: int, pad_batches: bool = False,
                 queue_depth: int = QUEUE_DEPTH) -> None:
        self.run = run
        self.testset = testset
        self.mean = mean
        self.std = std
        self.batch_size = batch_size
        self.pad_batches = pad_batches
        self.queue_depth = queue_depth
        self._cancelled = False
        self._stop = threading.Event()

    def cancel(self) -> None:
        """Stop soon: the running :meth:`embed` raises :class:`Cancelled`."""
        self._cancelled = True
        self._stop.set()

    def embed(self, shards: Sequence[int], on_shard: Callable[[int, np.ndarray], None],
              on_batch: Callable[[int], None] | None = None) -> None:
        """Embed ``shards`` in order; ``on_shard(index, features)`` is called as each completes."""
        if not shards:
            return
        self._stop = threading.Event()
        if self._cancelled:
            raise Cancelled("embedding cancelled")
        free: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(self.queue_depth + 2):
            free.put(np.zeros((self.batch_size, 3, *IMAGE_SHAPE[:2]), dtype=np.float32))
        to_infer: queue.Queue = queue.Queue(self.queue_depth)
        to_write: queue.Queue = queue.Queue(self.queue_depth)
        writer_errors: list[BaseException] = []
        reader = threading.Thread(target=self._read, args=(shards, free, to_infer),
                                  name="embed-reader", daemon=True)
        writer = threading.Thread(target=self._write,
                                  args=(to_write, on_shard, on_batch, writer_errors),
                                  name="embed-writer", daemon=True)
        reader.start()
        writer.start()
        failure: BaseException | None = None
        try:
            while True:
                try:
                    item = to_infer.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():
                        break
                    continue
                if item is _DONE or self._stop.is_set():
                    break
                if isinstance(item, _Failure):
                    failure = item.error
                    break
                rows = self.batch_size if self.pad_batches else item.rows
                if rows > item.rows:
                    item.buffer[item.rows:rows] = 0
                features = self.run(item.buffer[:rows])
                features = np.array(features[:item.rows], dtype=np.float32, copy=True)
                free.put(item.buffer)
                to_write.put((item.shard, item.start, features))
        except Exception as exc:  # noqa: BLE001 - raised below, once the other stages stopped
            failure = exc
        finally:
            if failure is not None:
                self._stop.set()
            to_write.put(_DONE)
            writer.join()
            self._stop.set()
            self._join_reader(reader, free, to_infer)
        if failure is not None:
            raise failure
        if writer_errors:
            raise writer_errors[0]
        if self._cancelled:
            raise Cancelled("embedding cancelled")

    @staticmethod
    def _join_reader(reader: threading.Thread, free: queue.Queue, to_infer: queue.Queue) -> None:
        """Unblock a reader waiting for a free buffer or a queue slot; it sees the stop flag."""
        while reader.is_alive():
            try:
                while True:
                    to_infer.get_nowait()
            except queue.Empty:
                pass
            free.put(np.zeros((0,), dtype=np.float32))
            reader.join(timeout=0.05)

    def _read(self, shards: Sequence[int], free: queue.Queue, to_infer: queue.Queue) -> None:
        # Always ends with one last item (done or the failure), so the calling
        # thread never waits for a reader that has gone.
        try:
            self._read_batches(shards, free, to_infer)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, raised there
            to_infer.put(_Failure(exc))
        else:
            to_infer.put(_DONE)

    def _read_batches(self, shards: Sequence[int], free: queue.Queue,
                      to_infer: queue.Queue) -> None:
        for shard in shards:
            images = self.testset.read_shard(shard, verify=True)
            for start in range(0, len(images), self.batch_size):
                buffer = free.get()
                if self._stop.is_set():
                    return
                part = images[start:start + self.batch_size]
                preprocess(part, self.mean, self.std, out=buffer)
                to_infer.put(_Batch(shard, start, len(part), buffer))

    def _write(self, to_write: queue.Queue, on_shard: Callable[[int, np.ndarray], None],
               on_batch: Callable[[int], None] | None, errors: list[BaseException]) -> None:
        current: int | None = None
        gathered: np.ndarray | None = None
        filled = 0
        try:
            while True:
                item = to_write.get()
                if item is _DONE:
                    return
                if errors:
                    continue  # drain until told to stop
                shard, start, features = item
                if shard != current:
                    current = shard
                    rows = self.testset.shards[shard].images
                    gathered = np.empty((rows, features.shape[1]), dtype=np.float32)
                    filled = 0
                gathered[start:start + len(features)] = features
                filled += len(features)
                if on_batch:
                    on_batch(len(features))
                if filled == len(gathered):
                    on_shard(shard, gathered)
                    current, gathered = None, None
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, raised there
            errors.append(exc)
            self._stop.set()
            while to_write.get() is not _DONE:  # keep the inference loop from blocking
                pass


def non_finite_rows(features: np.ndarray) -> int:
    """Rows that can never be accepted: any NaN or Inf, or a zero vector (DESIGN.md section 3)."""
    finite = np.isfinite(features).all(axis=1)
    zero = ~np.any(features != 0, axis=1)
    return int((~finite | zero).sum())
