"""Linear face models for the synthetic world, fitted without torch, exported as ONNX.

Every model has the same graph (8 named nodes, so it passes the reference
checker's ">= 8 nodes" rule; no node name starts with Sub/Mul/Div, so the
platform feeds ``(x - 127.5) / 127.5``)::

    input [batch, 3, 112, 112] float32, normalised
      -> resize (AveragePool 2x2) -> pool (AveragePool) -> flatten
      -> center (subtract the training mean) -> project (MatMul to k dims)
      -> embed (MatMul, orthonormal rows k -> feature_dim, keeps cosines)
      -> normalise (L2) -> feature (Identity) -> output "feature" [batch, feature_dim]

What differs between models is how ``project`` is found (fitters below): a
random projection (an untrained network), PCA (unsupervised), or LDA (the
directions that separate identities best, given labelled training images),
with more or fewer training identities and with or without masked training
images (mask augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_MEAN = 127.5
INPUT_STD = 127.5
OPSET = 17


@dataclass(frozen=True)
class LinearFaceModel:
    """``feature = normalise(embed^T project^T (pool(x) - center))`` on normalised pixels."""

    pool: int  # total pooling factor (even): 112 / pool cells per side
    center: np.ndarray  # [d_in]
    project: np.ndarray  # [d_in, k]
    embed: np.ndarray  # [k, feature_dim], orthonormal rows

    @property
    def feature_dim(self) -> int:
        return int(self.embed.shape[1])

    def features(self, images: np.ndarray) -> np.ndarray:
        """Reference computation in numpy (uint8 NHWC in, float32 features out)."""
        pooled = pooled_pixels(images, self.pool)
        out = (pooled - self.center) @ self.project @ self.embed
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    def to_onnx(self, name: str, doc: str = "") -> onnx.ModelProto:
        return _build_graph(self, name, doc)


def pooled_pixels(images: np.ndarray, pool: int, chunk: int = 512) -> np.ndarray:
    """Normalised, average-pooled pixels in the ONNX graph's order (C, H, W): float64 [n, d].

    Pooling and normalisation are both affine, so pixels are pooled first (integer sums,
    exact) and normalised after, in float64.
    """
    cells = 112 // pool
    out = np.empty((len(images), 3 * cells * cells))
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk]
        # Rows first, then columns; uint16 holds a sum of up to 256 uint8 pixels exactly.
        rows = block.reshape(len(block), cells, pool, 112 * 3).sum(axis=2, dtype=np.uint16)
        sums = rows.reshape(len(block), cells, cells, pool, 3).sum(axis=3, dtype=np.uint16)
        pooled = (sums.astype(np.float64) / (pool * pool) - INPUT_MEAN) / INPUT_STD
        out[start:start + len(block)] = pooled.transpose(0, 3, 1, 2).reshape(len(block), -1)
    return out


def orthonormal_rows(rng: np.random.Generator, k: int, dim: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((dim, k)))
    return q.T  # [k, dim], rows orthonormal: cosines are preserved


def fit_random(pixels: np.ndarray, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """An untrained network: centred, then a random Gaussian projection."""
    center = pixels.mean(axis=0)
    return center, rng.standard_normal((pixels.shape[1], k)) / np.sqrt(pixels.shape[1])


def fit_lda(pixels: np.ndarray, labels: np.ndarray, k: int,
            regularisation: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Fisher LDA: directions maximising between- over within-identity variance.

    Within-identity scatter is regularised by ``regularisation`` times its mean
    eigenvalue (few training identities -> a noisy estimate -> a worse model).
    Directions are scaled so within-identity variance is 1 along each.
    """
    center = pixels.mean(axis=0)
    classes, codes = np.unique(labels, return_inverse=True)
    means = np.zeros((len(classes), pixels.shape[1]))
    np.add.at(means, codes, pixels)
    counts = np.bincount(codes).astype(float)
    means /= counts[:, None]
    within = pixels - means[codes]
    s_within = within.T @ within / len(pixels)
    between = (means - center) * np.sqrt(counts[:, None])
    s_between = between.T @ between / len(pixels)
    s_within += regularisation * np.trace(s_within) / len(s_within) * np.eye(len(s_within))
    # Whiten the within scatter, then take the principal axes of the between scatter.
    w_values, w_vectors = np.linalg.eigh(s_within)
    whiten = w_vectors / np.sqrt(w_values)
    _, b_vectors = np.linalg.eigh(whiten.T @ s_between @ whiten)
    return center, whiten @ b_vectors[:, ::-1][:, :k]


def _build_graph(model: LinearFaceModel, name: str, doc: str) -> onnx.ModelProto:
    initializers = [
        numpy_helper.from_array(model.center.astype(np.float32), "center_mean"),
        numpy_helper.from_array(model.project.astype(np.float32), "project_weight"),
        numpy_helper.from_array(model.embed.astype(np.float32), "embed_weight"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["input"], ["resized"], name="resize",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["resized"], ["pooled"], name="pool",
                         kernel_shape=[model.pool // 2] * 2, strides=[model.pool // 2] * 2),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Sub", ["flat", "center_mean"], ["centred"], name="center"),
        helper.make_node("MatMul", ["centred", "project_weight"], ["projected"], name="project"),
        helper.make_node("MatMul", ["projected", "embed_weight"], ["embedded"], name="embed"),
        helper.make_node("LpNormalization", ["embedded"], ["normalised"], name="normalise",
                         axis=1, p=2),
        helper.make_node("Identity", ["normalised"], ["feature"], name="feature"),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("feature", TensorProto.FLOAT,
                                       ["batch", model.feature_dim])],
        initializers,
    )
    onnx_model = helper.make_model(graph, producer_name="mfr-baselines",
                                   opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = 8
    onnx_model.doc_string = doc
    onnx.checker.check_model(onnx_model)
    return onnx_model
