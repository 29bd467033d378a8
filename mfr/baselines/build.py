"""``mfr baselines``: ONNX models of graded, known quality for the synthetic world.

Quality is set the way it is set in real face recognition: by how much
labelled training data a model saw. All LDA models are fitted on the first
100 / 400 / 1,500 identities of one training set drawn from the synthetic
world (disjoint from every test set), with mask augmentation on a quarter of
the images; more identities -> a better estimate of what separates faces ->
higher TAR on every protocol. ``quality_rank`` in baselines.json orders them
(0 = worst); a test checks that the ranking scores follow that order.

``synth-lda-1500-nomask`` is the 1,500-identity model fitted without masked
images: as good on MR, much worse on Mask (it has no rank of its own: its
ranking score lands near synth-lda-400's).

Random-weight IResNet-18/50/100 models (from :mod:`mfr.onnxzoo`) are for
benchmarks and latency calibration; they recognise nobody.
"""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from mfr.baselines.linear import (
    INPUT_MEAN,
    INPUT_STD,
    LinearFaceModel,
    fit_lda,
    fit_random,
    orthonormal_rows,
    pooled_pixels,
)
from mfr.testset.synth import training_set

POOL = 8  # 112 / 8 = 14 cells a side: 588 inputs to the projection
LATENT_DIMS = 64  # LDA directions kept
FEATURE_DIM = 128
TRAINING_IDENTITIES = 1500
IMAGES_PER_IDENTITY = 6
MASK_AUGMENTATION = 0.25
TRAINING_SEED = 7


@dataclass(frozen=True)
class BaselineSpec:
    name: str
    description: str
    identities: int  # training identities (0: untrained)
    masked_training: bool  # whether the masked training images are used
    quality_rank: int | None


BASELINES = (
    BaselineSpec("synth-random", "untrained: a random projection of the pooled pixels", 0,
                 False, 0),
    BaselineSpec("synth-lda-100", "LDA on 100 training identities, mask augmentation", 100,
                 True, 1),
    BaselineSpec("synth-lda-400", "LDA on 400 training identities, mask augmentation", 400,
                 True, 2),
    BaselineSpec("synth-lda-1500", "LDA on 1,500 training identities, mask augmentation", 1500,
                 True, 3),
    BaselineSpec("synth-lda-1500-nomask",
                 "LDA on 1,500 training identities, no masked images (mask-unaware)", 1500,
                 False, None),
)


def _training_pixels(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pixels, labels, masked = [], [], []
    for images, part_labels, part_masked in training_set(
            seed, TRAINING_IDENTITIES, IMAGES_PER_IDENTITY, MASK_AUGMENTATION):
        pixels.append(pooled_pixels(images, POOL))
        labels.append(part_labels)
        masked.append(part_masked)
    return np.concatenate(pixels), np.concatenate(labels), np.concatenate(masked)


def fit_baselines(seed: int = TRAINING_SEED) -> dict[str, LinearFaceModel]:
    """Fit every synthetic baseline (a few seconds)."""
    pixels, labels, masked = _training_pixels(seed)
    rng = np.random.default_rng([seed, 1])
    models = {}
    for spec in BASELINES:
        if spec.identities == 0:
            center, project = fit_random(pixels, rng, FEATURE_DIM)
        else:
            keep = labels < spec.identities
            if not spec.masked_training:
                keep &= ~masked
            center, project = fit_lda(pixels[keep], labels[keep], LATENT_DIMS)
        embed = orthonormal_rows(rng, project.shape[1], FEATURE_DIM)
        models[spec.name] = LinearFaceModel(POOL, center, project, embed)
    return models


def _write(model: onnx.ModelProto, path: Path, zipped: bool) -> dict:
    data = model.SerializeToString()
    path.write_bytes(data)
    entry = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if zipped:
        zip_path = path.with_suffix(".zip")
        # As the seed's `zip xxx.zip model.onnx` makes it: a regular file, mode 0644.
        member = zipfile.ZipInfo("model.onnx", date_time=(2021, 6, 1, 0, 0, 0))
        member.external_attr = (stat.S_IFREG | 0o644) << 16
        member.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(zip_path, "w") as archive:
            archive.writestr(member, data)
        entry["zip"] = zip_path.name
    return entry


def build_baselines(out: str | Path, iresnet: tuple[int, ...] = (), zipped: bool = False,
                    seed: int = TRAINING_SEED, say=lambda _line: None) -> list[dict]:
    """Write the synthetic baselines (and random-weight IResNets) to ``out``; return the index.

    ``out/baselines.json`` lists every model: name, file, sha256, description,
    quality_rank, feature_dim, input normalisation.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say(f"fitting {len(BASELINES)} synthetic baselines "
        f"({TRAINING_IDENTITIES} x {IMAGES_PER_IDENTITY} training images)")
    models = fit_baselines(seed)
    index = []
    for spec in BASELINES:
        model = models[spec.name]
        onnx_model = model.to_onnx(spec.name, doc=spec.description)
        entry = _write(onnx_model, out / f"{spec.name}.onnx", zipped)
        entry.update(name=spec.name, kind="synthetic", description=spec.description,
                     quality_rank=spec.quality_rank, training_identities=spec.identities,
                     mask_augmentation=MASK_AUGMENTATION if spec.masked_training else 0.0,
                     feature_dim=model.feature_dim, input_mean=INPUT_MEAN, input_std=INPUT_STD)
        index.append(entry)
        say(f"  {entry['file']}: {spec.description}")
    if iresnet:
        from mfr.onnxzoo import build_iresnet

        for depth in iresnet:
            say(f"  building iresnet{depth} (random weights)")
            name = f"iresnet{depth}-random"
            entry = _write(build_iresnet(depth, seed=seed), out / f"{name}.onnx", zipped)
            entry.update(name=name, kind="iresnet", quality_rank=None,
                         description=f"IResNet-{depth} shape, seeded random weights "
                                     "(benchmarks, latency; recognises nobody)",
                         feature_dim=512, input_mean=INPUT_MEAN, input_std=INPUT_STD)
            index.append(entry)
    (out / "baselines.json").write_text(json.dumps({"models": index}, indent=1) + "\n", "utf-8")
    return index
