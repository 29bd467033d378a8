"""``mfr testset``: build test sets (import real faces, synthesise) and look after them.

    mfr testset import --manifest M.csv --images DIR --out TESTSET [--challenge C.toml] [--upload]
    mfr testset synth --out TESTSET [--scale S] [--seed N] [--protocols] [--upload]
    mfr testset info TESTSET | verify TESTSET | upload TESTSET | export TESTSET --out DIR

The format is described in docs/testsets.md. ``--upload`` (and ``upload``)
puts the test set into object storage (MFR_S3_* settings), where the
embedder and scorer services find it by id.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.errors import reports_errors


def _report(testset, as_json: bool, verb: str, uploaded: bool | None = None) -> None:
    from mfr.testset.store import testset_summary

    summary = testset_summary(testset)
    if uploaded is not None:
        summary["uploaded"] = uploaded
    if as_json:
        print(json.dumps(summary))
        return
    click.echo(f"{verb} {testset.root}: {testset.images} images of {summary['identities']} "
               f"identities in {summary['shards']} shards")
    click.echo(f"  id {testset.id}")
    tags = ", ".join(f"{tag} {count}" for tag, count in summary["tags"].items())
    click.echo(f"  tags: {tags}")
    if summary["protocol_files"]:
        click.echo(f"  protocol files: {', '.join(summary['protocol_files'])}")
    if uploaded is not None:
        click.echo("  uploaded to object storage" if uploaded else "  already in object storage")


def _upload(testset) -> bool:
    from mfr.settings import StorageSettings
    from mfr.storage import ObjectStore
    from mfr.testset.store import upload_testset

    store = ObjectStore.from_settings(StorageSettings())
    store.ensure_buckets()
    return upload_testset(store, testset)


_shard_size = click.option("--shard-size", type=click.IntRange(min=1), default=None,
                           help="Images per shard (default 2048).")
_upload_flag = click.option("--upload", is_flag=True,
                            help="Also upload to object storage (MFR_S3_* settings).")
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
_force = click.option("--force", is_flag=True, help="Replace OUT if it exists.")


@click.group()
def testset() -> None:
    """Import real test images or build a synthetic test set."""


@testset.command("import")
@click.option("--manifest", "manifest", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with header path,identity,tags; row order = image index.")
@click.option("--images", "images", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder the manifest's paths are relative to.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Test-set folder to create.")
@click.option("--challenge", "challenge", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Challenge TOML whose protocol files (pair lists, templates; "
                                 "beside the manifest) are checked and stored with the test set.")
@_shard_size
@_upload_flag
@_force
@_json
@reports_errors
def import_(manifest: Path, images: Path, out: Path, challenge: Path | None,
            shard_size: int | None, upload: bool, force: bool, as_json: bool) -> None:
    """Import aligned 112x112 RGB faces (PNG/JPEG) listed in a manifest."""
    from mfr.challenge import load_challenge
    from mfr.testset.format import DEFAULT_SHARD_SIZE
    from mfr.testset.importer import import_testset

    result = import_testset(manifest, images, out, shard_size or DEFAULT_SHARD_SIZE,
                            overwrite=force,
                            challenge=load_challenge(challenge) if challenge else None)
    _report(result, as_json, "imported", _upload(result) if upload else None)


@testset.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Test-set folder to create.")
@click.option("--scale", type=click.FloatRange(min=0, max=1, min_open=True), default=0.01,
              show_default=True, help="Fraction of the real challenge's image counts.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Identities and images depend on it; the renderer does not.")
@click.option("--protocols", is_flag=True,
              help="Also build MFR-Ongoing's protocol files: an LFW-like pair list, an "
                   "IJB-C-like template set and a 1:N split (docs/testsets.md).")
@_shard_size
@_upload_flag
@_force
@_json
@reports_errors
def synth(out: Path, scale: float, seed: int, protocols: bool, shard_size: int | None,
          upload: bool, force: bool, as_json: bool) -> None:
    """Build a synthetic test set with the built-in challenge's structure."""
    from mfr.testset.format import DEFAULT_SHARD_SIZE
    from mfr.testset.synth import synth_testset

    if not as_json:
        click.echo(f"rendering a synthetic test set at scale {scale:g}, seed {seed}", err=True)
    result = synth_testset(out, scale=scale, seed=seed, protocols=protocols,
                           shard_size=shard_size or DEFAULT_SHARD_SIZE, overwrite=force)
    _report(result, as_json, "wrote", _upload(result) if upload else None)


def _on_testset(action):
    """``mfr testset NAME PATH [--json]``: ``action(testset, as_json)`` on the opened test set."""

    @testset.command(name=action.__name__, help=action.__doc__)
    @click.argument("path", type=click.Path(file_okay=False, path_type=Path))
    @_json
    @reports_errors
    def command(path: Path, as_json: bool) -> None:
        from mfr.testset.format import TestSet

        action(TestSet(path), as_json)

    return command


@_on_testset
def info(opened, as_json: bool) -> None:
    """Describe a test set."""
    _report(opened, as_json, "test set")


@_on_testset
def verify(opened, as_json: bool) -> None:
    """Check the manifest and every shard against the recorded hashes."""
    opened.verify()
    _report(opened, as_json, "verified")


@_on_testset
def upload(opened, as_json: bool) -> None:
    """Upload a test set to object storage (MFR_S3_* settings)."""
    _report(opened, as_json, "test set", _upload(opened))


@testset.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the images to (at their manifest paths, as PNG).")
@reports_errors
def export(path: Path, out: Path) -> None:
    """Write a test set's images as PNG files (to look at them, or to re-import)."""
    from mfr.testset.format import TestSet
    from mfr.testset.importer import export_images

    count = export_images(TestSet(path), out)
    click.echo(f"wrote {count} images under {out}", err=not sys.stdout.isatty())
