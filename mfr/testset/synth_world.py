"""The fixed world of the synthetic test sets (:mod:`mfr.testset.synth`), and the rows they
are planned in: shared by the built-in parts (``synth``) and MFR-Ongoing's
(``synth_protocols``), which import it, never each other. The generative model is
described in ``synth``'s docstring and docs/testsets.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SYNTH_VERSION = 1
WORLD_SEED = 20210601
SIZE = 112
LATENT_DIM = 64
EXPRESSION_DIM = 16
GRID = 8  # control-grid size of the smooth basis images
RENDER_CHUNK = 256  # images rendered per step (fixed: part of the random stream)
IDENTITY_GAIN = 3.2  # pixel levels per latent unit and basis image
EXPRESSION_GAIN = 5.0
NOISE_SIGMA = 6.0
MAX_SHIFT = 3

# The seed's counts (DESIGN.md section 2): (images, identities).
REAL_COUNTS = {
    "mask": (6964, 6964),  # 6,964 masked + 13,928 non-masked images of 6,964 identities
    "children": (157280, 14344),
    "african": (298010, 43874),
    "caucasian": (697245, 103293),
    "south-asian": (237080, 35086),
    "east-asian": (391970, 59890),
}
RACES = ("african", "caucasian", "south-asian", "east-asian")
DEFAULT_SCALE = 0.01


@dataclass(frozen=True)
class Group:
    """Statistics of one population group (see the module docstring)."""

    name: str
    tone: tuple[float, float, float]  # skin RGB
    contrast: float  # gain of the identity and expression signal
    offset: float  # distance of the group mean from the origin, latent units
    spread: float  # between-identity standard deviation per latent dimension
    within: float  # within-identity standard deviation per latent dimension


GROUPS: dict[str, Group] = {
    g.name: g
    for g in (
        Group("african", (188.0, 150.0, 124.0), 0.95, 2.2, 0.88, 0.42),
        Group("caucasian", (212.0, 178.0, 156.0), 1.0, 1.8, 1.05, 0.40),
        Group("south-asian", (198.0, 160.0, 130.0), 0.97, 2.0, 0.95, 0.42),
        Group("east-asian", (214.0, 184.0, 152.0), 0.85, 3.0, 0.75, 0.42),
        Group("children", (222.0, 186.0, 166.0), 0.92, 2.0, 0.70, 0.52),
    )
}
GROUP_NAMES = tuple(GROUPS)
MASK_COLOURS = ((150.0, 185.0, 215.0), (212.0, 212.0, 212.0), (110.0, 110.0, 118.0),
                (205.0, 170.0, 182.0), (130.0, 160.0, 130.0))


CANVAS = SIZE + 2 * MAX_SHIFT  # rendered larger; a pose shift picks the 112x112 window


def _smooth_fields(rng: np.random.Generator, count: int, channels: int) -> np.ndarray:
    """``count`` smooth random canvases [count, 118, 118, channels]: an 8x8 grid, upsampled."""
    grid = rng.standard_normal((count, GRID, GRID, channels))
    # Separable linear interpolation from the grid to pixel centres.
    pos = (np.arange(CANVAS) + 0.5) / CANVAS * (GRID - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, GRID - 2)
    frac = pos - lo
    up = np.zeros((GRID, CANVAS))
    up[lo, np.arange(CANVAS)] += 1 - frac
    up[lo + 1, np.arange(CANVAS)] += frac
    return np.einsum("kyxc,ya,xb->kabc", grid, up, up)


def _face_fields(rng: np.random.Generator, count: int) -> np.ndarray:
    """Smooth fields that are mostly brightness with some colour, as skin varies."""
    brightness = _smooth_fields(rng, count, 1)
    colour = _smooth_fields(rng, count, 3)
    return 0.9 * brightness + 0.45 * colour


def _canvas_coords() -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of the canvas, in the unshifted image's frame."""
    y, x = np.mgrid[0:CANVAS, 0:CANVAS] + 0.5 - MAX_SHIFT
    return y, x


def _ellipse(cy: float, cx: float, ry: float, rx: float, soft: float = 2.0) -> np.ndarray:
    y, x = _canvas_coords()
    r = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
    return np.clip((1 - r) * min(ry, rx) / soft + 0.5, 0, 1)


class World:
    """The fixed renderer: templates, basis images, mask texture, group means.

    Rendering is one matrix product per chunk of images: the coefficients
    (latents times contrast and lighting gain, a one-hot group, lighting
    offset and gradient) times the fixed images (identity and expression
    basis, group templates, constant, x and y ramps), on a canvas 3 pixels
    larger on each side so a pose shift is a crop.
    """

    def __init__(self, seed: int = WORLD_SEED) -> None:
        rng = np.random.default_rng(seed)
        self.face = _ellipse(58, 56, 50, 40, soft=4.0)  # where the face is
        features = (
            0.55 * _ellipse(44, 38, 5, 9) + 0.55 * _ellipse(44, 74, 5, 9)  # eyes
            + 0.35 * _ellipse(33, 38, 2.5, 11) + 0.35 * _ellipse(33, 74, 2.5, 11)  # brows
            + 0.25 * _ellipse(64, 56, 10, 5)  # nose shade
            + 0.45 * _ellipse(84, 56, 5, 15)  # mouth
        )
        shading = np.clip(features, 0, 0.8)[..., None]
        face = self.face[..., None]
        background = 110 + 25 * _smooth_fields(rng, 1, 3)[0]
        identity = _face_fields(rng, LATENT_DIM) * face
        identity *= IDENTITY_GAIN / np.sqrt((identity**2).mean(axis=(1, 2, 3), keepdims=True))
        expression = _face_fields(rng, EXPRESSION_DIM) * face
        expression *= EXPRESSION_GAIN / np.sqrt((expression**2).mean(axis=(1, 2, 3),
                                                                      keepdims=True))
        self.group_means = {}
        for name, group in GROUPS.items():
            direction = rng.standard_normal(LATENT_DIM)
            self.group_means[name] = group.offset * direction / np.linalg.norm(direction)
        templates = [face * np.array(g.tone) * (1 - shading) + (1 - face) * background
                     for g in GROUPS.values()]
        y, x = _canvas_coords()
        ramps = [np.ones_like(x), (x - 56) / 56, (y - 56) / 56]
        ramps = [np.repeat(r[..., None], 3, axis=2) for r in ramps]
        # Rows: identity basis, expression basis, group templates, lighting ramps.
        self.basis = np.concatenate([
            identity.reshape(LATENT_DIM, -1),
            expression.reshape(EXPRESSION_DIM, -1),
            np.stack(templates).reshape(len(templates), -1),
            np.stack(ramps).reshape(len(ramps), -1),
        ]).astype(np.float32)
        self.light_basis = self.basis[-3:]
        # The mask covers the lower face: from just under the nose (higher at
        # the centre, like a mask over the nose bridge) to the chin.
        top = 58 + 10 * ((x - 56) / 40) ** 2
        region = (y >= top) & (np.abs(x - 56) <= 42) & (self.face > 0.05)
        self.mask_cover = np.repeat(region.astype(np.float32)[..., None], 3, axis=2).reshape(-1)
        pleats = 10 * np.sin(2 * np.pi * y / 9) + 6 * _smooth_fields(rng, 1, 1)[0, ..., 0]
        self.mask_images = np.stack([
            (np.array(colour) + pleats[..., None]).reshape(-1) for colour in MASK_COLOURS
        ]).astype(np.float32)

    def sample_identities(self, rng: np.random.Generator, groups: list[str]) -> np.ndarray:
        """Latent identity vectors [n, 64] for identities of the given groups."""
        z = rng.standard_normal((len(groups), LATENT_DIM))
        spread = np.array([GROUPS[g].spread for g in groups])[:, None]
        mean = np.stack([self.group_means[g] for g in groups])
        return mean + spread * z

    def render(self, rng: np.random.Generator, latents: np.ndarray, groups: list[str],
               masked: np.ndarray) -> np.ndarray:
        """Images uint8 [n, 112, 112, 3] of identities ``latents`` (one row per image)."""
        out = np.empty((len(latents), SIZE, SIZE, 3), dtype=np.uint8)
        for start in range(0, len(latents), RENDER_CHUNK):
            stop = min(start + RENDER_CHUNK, len(latents))
            out[start:stop] = self._render_chunk(rng, latents[start:stop], groups[start:stop],
                                                 masked[start:stop])
        return out

    def _render_chunk(self, rng: np.random.Generator, identity: np.ndarray, groups: list[str],
                      masked: np.ndarray) -> np.ndarray:
        n = len(identity)
        group_index = np.array([GROUP_NAMES.index(g) for g in groups])
        within = np.array([GROUPS[g].within for g in groups])[:, None]
        contrast = np.array([GROUPS[g].contrast for g in groups])[:, None]
        x = identity + within * rng.standard_normal(identity.shape)
        e = rng.standard_normal((n, EXPRESSION_DIM))
        gain = np.exp(0.12 * rng.standard_normal(n))[:, None]
        offset = 8 * rng.standard_normal(n)
        angle = rng.uniform(0, 2 * np.pi, n)
        slope = 14 * rng.standard_normal(n)
        light = np.stack([offset, slope * np.cos(angle), slope * np.sin(angle)], axis=1)
        colour = rng.integers(0, len(MASK_COLOURS), n)
        shifts = rng.integers(0, 2 * MAX_SHIFT + 1, (n, 2))
        # Sensor noise: uniform with standard deviation NOISE_SIGMA (from raw
        # random bytes: a Gaussian draw would cost most of the rendering time).
        noise = np.frombuffer(rng.bytes(n * SIZE * SIZE * 3), dtype=np.uint8)

        coefficients = np.concatenate(
            [gain * contrast * x, gain * contrast * e, gain * np.eye(len(GROUPS))[group_index],
             light], axis=1).astype(np.float32)
        canvas = coefficients @ self.basis  # [n, 118*118*3]
        # Masks replace the lower face (the identity signal there is lost);
        # the mask is lit like the face.
        for i in np.flatnonzero(masked):
            lit_mask = gain[i, 0] * self.mask_images[colour[i]] + light[i] @ self.light_basis
            canvas[i] += self.mask_cover * (lit_mask - canvas[i])
        canvas = canvas.reshape(n, CANVAS, CANVAS, 3)
        # Pose: the 112x112 window at a shift of up to MAX_SHIFT pixels.
        step = NOISE_SIGMA * np.sqrt(12.0) / 256
        pixels = np.multiply(noise, np.float32(step), dtype=np.float32).reshape(n, SIZE, SIZE, 3)
        pixels -= np.float32(127.5 * step)
        for i, (dy, dx) in enumerate(shifts):
            pixels[i] += canvas[i, dy:dy + SIZE, dx:dx + SIZE]
        np.rint(pixels, out=pixels)
        np.clip(pixels, 0, 255, out=pixels)
        return pixels.astype(np.uint8)


_WORLD: World | None = None


def world() -> World:
    """The one fixed world (built on first use, about a second)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = World()
    return _WORLD


@dataclass
class Rows:
    """The images of a synthetic test set as they are planned, before any is rendered."""

    paths: list[str]
    identities: list[str]
    tags: list[frozenset[str]]
    latents: list[np.ndarray]
    groups: list[str]
    masked: list[bool]

    def add(self, path: str, identity: str, tags: set[str], latent: np.ndarray, group: str,
            masked: bool) -> None:
        self.paths.append(path)
        self.identities.append(identity)
        self.tags.append(frozenset(tags))
        self.latents.append(latent)
        self.groups.append(group)
        self.masked.append(masked)
