"""The test set ``mfr up`` serves, and the machine's cache where it is built once.

Without ``--testset``, a small synthetic one (``mfr.testset.synth``), built once per
machine in the cache directory (``MFR_CACHE_DIR``, default ``~/.cache/mfr``) and
reused; with MFR-Ongoing's parts and protocol files when the served challenge
reads protocol files. It is uploaded to the test-set bucket under its id, where the
embedder and the scorer find it.
"""

from __future__ import annotations

from pathlib import Path

# Scale of the synthetic test set `mfr up` serves when given none (about 3,600 images).
DEFAULT_SYNTH_SCALE = 0.002


def default_testset(scale: float = DEFAULT_SYNTH_SCALE, seed: int = 0,
                    protocols: bool = False, cache: Path | None = None) -> Path:
    """A synthetic test set of the built-in challenges, built once per machine in ``cache``
    (the caller's settings; by default ``MFR_CACHE_DIR``'s) and reused; ``protocols``: with
    MFR-Ongoing's parts and protocol files too."""
    from mfr.settings import CacheSettings
    from mfr.testset.format import TestSet
    from mfr.testset.synth import SYNTH_VERSION, synth_testset

    cache = Path(cache) if cache is not None else CacheSettings().cache_dir
    suffix = "-protocols" if protocols else ""
    folder = (cache / "testsets"
              / f"synth-v{SYNTH_VERSION}-scale{scale:g}-seed{seed}{suffix}")
    try:
        TestSet(folder)
    except Exception:  # noqa: BLE001 - absent or incomplete: build it
        _build_atomically(folder, lambda out: synth_testset(
            out, scale=scale, seed=seed, overwrite=True, protocols=protocols))
    return folder


def _build_atomically(folder: Path, build) -> None:
    """Build in a private sibling folder, then rename it into place: two processes that
    want the same test set at once (two test runs, two ``mfr up``) never read a
    half-written one, and the loser of the race throws its copy away."""
    import shutil
    import tempfile

    from mfr.testset.format import TestSet

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(scratch / "testset")
        try:
            (scratch / "testset").rename(folder)
        except OSError:  # a folder is there: another process's copy, or a broken one
            try:
                TestSet(folder)
            except Exception:  # noqa: BLE001 - left by an interrupted build: replace it
                folder.rename(scratch / "broken")
                (scratch / "testset").rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def needs_protocol_files(challenge: str | Path | None) -> bool:
    """Whether the served challenge has MFR-Ongoing's kinds (protocol files, or the 1:N
    tags): then the synthetic test set carries MFR-Ongoing's parts."""
    from mfr.challenge import load_challenge

    kinds = ("pairs", "templates", "identification")
    return any(p.kind in kinds for p in load_challenge(challenge).protocols)


def upload_testset(store, folder: Path) -> str:
    """Publish a test-set folder in the test-set bucket (``mfr.testset.store``); returns its id."""
    from mfr.testset.format import TestSet
    from mfr.testset.store import upload_testset as publish

    testset = TestSet(folder)
    publish(store, testset)
    return testset.id
