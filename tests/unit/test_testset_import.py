"""``mfr testset import``: PNG and JPEG 112x112 RGB only; a bad image is rejected with its row."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import cli
from mfr.testset.importer import ImportRejected, export_images, import_testset
from mfr.testset.synth import synth_testset


def _face(seed: int, size=(112, 112), mode="RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _write_set(root, images: dict[str, Image.Image | bytes], fmt: dict[str, str] | None = None):
    rows = ["path,identity,tags"]
    for i, (name, image) in enumerate(images.items()):
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(image, bytes):
            path.write_bytes(image)
        else:
            image.save(path, format=(fmt or {}).get(name) or
                       ("JPEG" if name.endswith(".jpg") else "PNG"))
        rows.append(f"{name},{i // 2},mr;african")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv", root / "images"


def test_png_and_jpeg_are_decoded_once_with_their_hashes(tmp_path):
    images = {"a/0.png": _face(0), "a/1.jpg": _face(1), "b/2.png": _face(2), "b/3.png": _face(3)}
    manifest, folder = _write_set(tmp_path, images)
    testset = import_testset(manifest, folder, tmp_path / "ts", shard_size=3)
    assert testset.images == 4 and [s.images for s in testset.shards] == [3, 1]
    np.testing.assert_array_equal(testset.image(0), np.asarray(images["a/0.png"]))
    # JPEG: the platform's pixels are PIL's decode of the file.
    np.testing.assert_array_equal(testset.image(1), np.asarray(Image.open(folder / "a/1.jpg")))
    sources = (testset.root / "sources.sha256").read_text().splitlines()
    import hashlib

    assert sources[3] == f"{hashlib.sha256((folder / 'b/3.png').read_bytes()).hexdigest()}  b/3.png"
    assert testset.info["files"]["sources.sha256"]
    assert testset.manifest.identities == ("0", "0", "1", "1")


def test_every_bad_image_is_reported_with_its_row_and_nothing_is_written(tmp_path):
    bad_png = io.BytesIO()
    _face(9).save(bad_png, format="PNG")
    images = {
        "ok.png": _face(0),
        "big.png": _face(1, size=(120, 112)),
        "grey.jpg": _face(2, mode="L"),
        "alpha.png": _face(3, mode="RGBA"),
        "bitmap.bmp": _face(4),
        "truncated.png": bad_png.getvalue()[:300],
        "text.png": b"not an image at all",
        "ok2.jpg": _face(5),
        "palette.png": _face(6, mode="P"),
    }
    manifest, folder = _write_set(tmp_path, images, fmt={"bitmap.bmp": "BMP"})
    with open(manifest, "a") as handle:
        handle.write("missing.png,9,\n../escape.png,9,\n")
    with pytest.raises(ImportRejected) as caught:
        import_testset(manifest, folder, tmp_path / "ts")
    rows = {e.row: e for e in caught.value.rows}
    assert sorted(rows) == [2, 3, 4, 5, 6, 7, 9, 10, 11]
    assert rows[2].reason == "size 120x112, expected 112x112"
    assert rows[3].reason.startswith("mode L")
    assert rows[4].reason.startswith("mode RGBA")
    assert rows[5].reason == "format BMP, expected PNG or JPEG"
    assert "decode" in rows[6].reason
    assert rows[7].path == "text.png" and "identify" in rows[7].reason
    assert rows[9].reason.startswith("mode P")
    assert rows[10].reason == "file not found"
    assert "inside the images folder" in rows[11].reason
    assert "row 2 (big.png): size 120x112" in str(caught.value)
    assert not (tmp_path / "ts").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ts")] == []


def test_cli_import_rejects_a_bad_image_with_its_row(tmp_path):
    manifest, folder = _write_set(tmp_path, {"0.png": _face(0), "1.png": _face(1),
                                             "2.png": _face(2, size=(112, 96))})
    result = CliRunner().invoke(cli, ["testset", "import", "--manifest", str(manifest),
                                      "--images", str(folder), "--out", str(tmp_path / "ts")])
    assert result.exit_code == 2
    assert "error[image_invalid]" in result.stderr
    assert "row 3 (2.png): size 112x96, expected 112x112" in result.stderr


def test_exported_synthetic_images_import_to_the_same_test_set(tmp_path):
    synthetic = synth_testset(tmp_path / "synth", scale=0.0004, seed=1, shard_size=128)
    assert export_images(synthetic, tmp_path / "png") == synthetic.images
    runner = CliRunner()
    result = runner.invoke(cli, ["testset", "import", "--manifest",
                                 str(synthetic.root / "manifest.csv"), "--images",
                                 str(tmp_path / "png"), "--out", str(tmp_path / "imported"),
                                 "--shard-size", "128", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["id"] == synthetic.id
    assert summary["images"] == synthetic.images


def test_cli_synth_and_info(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["testset", "synth", "--out", str(tmp_path / "ts"),
                                 "--scale", "0.0004", "--seed", "2", "--json"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["tags"]["mr"] > 0 and made["source"]["seed"] == 2
    info = runner.invoke(cli, ["testset", "verify", str(tmp_path / "ts"), "--json"])
    assert json.loads(info.stdout)["id"] == made["id"]
    again = runner.invoke(cli, ["testset", "synth", "--out", str(tmp_path / "ts")])
    assert again.exit_code == 2 and "testset_exists" in again.stderr
