"""Registry of offline datasets: digits, digits at 28x28, MNIST-1D and MNIST from local files.

Nothing here downloads anything. NumPy only at import time; scikit-learn is imported
lazily by the digits loaders, and torch is never imported.

=========  ============  =======  ====================================================
name       input shape   classes  source
=========  ============  =======  ====================================================
digits     (1, 8, 8)     10       scikit-learn's bundled 8x8 digits (1797 samples); the
                                  default. Stratified, seeded 80/20 split.
digits28   (1, 28, 28)   10       the same digits and split, bilinearly resized to 28x28
                                  so 28x28 models run with no external files.
mnist1d    (1, 40)       10       MNIST-1D, generated procedurally (5000 samples,
                                  4000 train / 1000 test).
mnist      (1, 28, 28)   10       MNIST read from local files under ``data_dir``.
=========  ============  =======  ====================================================

Features are float32. Image datasets hold intensities in [0, 1] (digits divided by 16,
MNIST by 255; resizing is a convex interpolation so it stays in [0, 1]). MNIST-1D is
standardised as in its reference implementation: the whole generated set (train and
test together, before the split) is shifted and scaled to zero mean and unit standard
deviation over all values; the statistics are fixed constants of the generator.

``load_dataset``'s ``seed`` drives the random train/test split of ``digits`` and
``digits28``. ``mnist`` has the canonical 60000/10000 split of its files and
``mnist1d`` the canonical dataset of its generator (seed 42), so they ignore it;
:func:`make_mnist1d` builds other MNIST-1D variants.

The test set belongs to the cloud: its :func:`test_set_hash` (``DatasetInfo.test_hash``)
is what is recorded on chain, so every party can check it evaluates on the same data.

MNIST-1D
--------
S. Greydanus and D. Kobak, "Scaling down deep learning with MNIST-1D" (originally
S. Greydanus, "Scaling down deep learning", arXiv:2011.14439, 2020). The generator below
is a NumPy port of the reference implementation, https://github.com/greydanus/mnist1d
(``mnist1d/data.py`` and ``mnist1d/transform.py``; Apache License 2.0, Copyright Sam
Greydanus): the same templates, transformations, default arguments and order of random
draws from a ``RandomState`` seeded with ``seed``. Two deviations, both numerical
equivalents: scipy's ``gaussian_filter(noise, 2)`` (mode ``reflect``, truncated at four
standard deviations) is a normalised 17-tap Gaussian kernel applied with NumPy, and
scipy's linear ``interp1d`` is ``np.interp``. Random state is local to each call (never
the global one), so the data are a pure function of the arguments; the result is cached
in-process.

MNIST files
-----------
Either the four IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each may be gzipped, with a
``.gz`` suffix), or a single ``mnist.npz`` holding ``x_train``, ``y_train``, ``x_test``,
``y_test``. ``mnist.npz`` is used when present. IDX files are parsed strictly (magic
number, dimensions and size); malformed input raises :class:`DecodeError` naming the file.
"""

from __future__ import annotations

import functools
import gzip
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from fedledger.errors import ConfigError, DecodeError, UsageError
from fedledger.fl.data import Dataset, dataset_hash, load_digits_split

DEFAULT_DATASET = "digits"


@dataclass(frozen=True)
class DatasetInfo:
    """What was loaded: shape of one sample, class count, sizes, provenance and test hash."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train_size: int
    test_size: int
    source: str
    test_hash: bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the test hash as hex)."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train_size": self.train_size,
            "test_size": self.test_size,
            "source": self.source,
            "test_hash": self.test_hash.hex(),
        }


Loader = Callable[[Path | None, int], tuple[Dataset, Dataset, str]]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: static description plus a loader ``(data_dir, seed)``."""

    name: str
    summary: str
    input_shape: tuple[int, ...]
    num_classes: int
    needs_data_dir: bool
    uses_seed: bool
    loader: Loader


def test_set_hash(test: Dataset) -> bytes:
    """The hash recorded on chain for the cloud's test set (:func:`dataset_hash`)."""
    return dataset_hash(test)


def dataset_names() -> tuple[str, ...]:
    """Names of the registered datasets, in registry order."""
    return tuple(DATASETS)


def load_dataset(
    name: str, *, data_dir: Path | None = None, seed: int = 0
) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Load dataset ``name``; return ``(train, test, info)``.

    ``data_dir`` is only read by datasets that need local files (``mnist``); ``seed``
    only changes datasets with a random split (see the module docstring). Unknown
    names raise :class:`UsageError`; missing files :class:`ConfigError`; malformed
    files :class:`DecodeError`.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise UsageError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
    train, test, source = spec.loader(Path(data_dir) if data_dir is not None else None, int(seed))
    for part, ds in (("train", train), ("test", test)):
        if tuple(ds.x.shape[1:]) != spec.input_shape:  # pragma: no cover - loader invariant
            raise AssertionError(f"{name} {part} samples have shape {ds.x.shape[1:]}")
    info = DatasetInfo(
        name=name,
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        train_size=len(train),
        test_size=len(test),
        source=source,
        test_hash=test_set_hash(test),
    )
    return train, test, info


# --- digits and digits28 ---------------------------------------------------------------------


def _digits(_data_dir: Path | None, seed: int) -> tuple[Dataset, Dataset, str]:
    train, test = load_digits_split(seed=seed)
    return train, test, f"scikit-learn load_digits (8x8, /16), stratified 80/20 split, seed {seed}"


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0``, ``i1`` and weight of ``i1`` for each output position.

    Half-pixel centres (output ``i`` samples input ``(i + 0.5) * n_in / n_out - 0.5``),
    clamped to the edges: the convention of OpenCV ``INTER_LINEAR`` and of torch's
    ``interpolate(mode="bilinear", align_corners=False)``.
    """
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, pos - i0


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize the last two axes of ``images`` to ``(height, width)``; float32 result.

    Each output pixel is a convex combination of at most four input pixels, so the
    value range is preserved. Only element-wise arithmetic is used (no BLAS), so the
    result does not depend on the linear-algebra library.
    """
    if images.ndim < 2 or height < 1 or width < 1:
        raise UsageError(f"cannot resize array of shape {images.shape} to {height}x{width}")
    x = np.asarray(images, dtype=np.float64)
    r0, r1, rw = _bilinear_weights(x.shape[-2], height)
    rows = x[..., r0, :] * (1.0 - rw)[:, None] + x[..., r1, :] * rw[:, None]
    c0, c1, cw = _bilinear_weights(x.shape[-1], width)
    out = rows[..., c0] * (1.0 - cw) + rows[..., c1] * cw
    return np.ascontiguousarray(out, dtype=np.float32)


def _digits28(_data_dir: Path | None, seed: int) -> tuple[Dataset, Dataset, str]:
    train, test = load_digits_split(seed=seed)
    up = [Dataset(resize_bilinear(ds.x, 28, 28), ds.y) for ds in (train, test)]
    source = (
        "scikit-learn load_digits (8x8, /16) bilinearly resized to 28x28, "
        f"stratified 80/20 split, seed {seed}"
    )
    return up[0], up[1], source


# --- MNIST-1D --------------------------------------------------------------------------------

# The ten 12-point templates of the reference implementation (``get_templates``).
_MNIST1D_TEMPLATES = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)


def mnist1d_templates() -> np.ndarray:
    """The ten digit templates, ``(10, 12)`` float64: whitened, starting at 0, divided by 6."""
    x = np.asarray(_MNIST1D_TEMPLATES, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    x = x / x.std(axis=1, keepdims=True)
    x = x - x[:, :1]  # signal starts (and ends) at 0
    return x / 6.0


def _pad(x: np.ndarray, padding: tuple[int, int], rng: np.random.RandomState) -> np.ndarray:
    """Append a random number of zeros in ``[low, high]``."""
    low, high = padding
    p = low + int(rng.rand() * (high - low + 1))
    return np.concatenate([x, np.zeros(p)])


def _shear(x: np.ndarray, scale: float, rng: np.random.RandomState) -> np.ndarray:
    """Subtract a random linear ramp with slope in ``[-scale/2, scale/2)``."""
    coeff = scale * (rng.rand() - 0.5)
    return np.asarray(x - coeff * np.linspace(-0.5, 0.5, len(x)))


def _translate(x: np.ndarray, max_translation: int, rng: np.random.RandomState) -> np.ndarray:
    """Rotate right by a random ``k`` in ``[0, max_translation)``."""
    k = int(rng.choice(max_translation))
    return np.roll(x, k)


def gaussian_filter1d(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Gaussian smoothing along the last axis, like scipy's ``gaussian_filter1d``.

    The kernel is ``exp(-t**2 / (2 sigma**2))`` for integer ``|t| <= int(truncate *
    sigma + 0.5)``, normalised to sum 1; edges are extended by mirror reflection
    including the edge sample (scipy's ``reflect`` mode, NumPy's ``symmetric`` pad).
    Computed as a fixed-order sum of shifted copies (no BLAS).
    """
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    pad_width = [(0, 0)] * (x.ndim - 1) + [(radius, radius)]
    padded = np.pad(x, pad_width, mode="symmetric")
    out = np.zeros_like(x)
    for k, w in enumerate(kernel):
        out += w * padded[..., k : k + n]
    return out


def _corr_noise_like(x: np.ndarray, scale: float, rng: np.random.RandomState) -> np.ndarray:
    """Correlated noise: white noise of std ``scale`` smoothed with a Gaussian of sigma 2."""
    return gaussian_filter1d(scale * rng.randn(*x.shape), 2.0)


def _iid_noise_like(x: np.ndarray, scale: float, rng: np.random.RandomState) -> np.ndarray:
    return np.asarray(scale * rng.randn(*x.shape))


def _interpolate(x: np.ndarray, n: int) -> np.ndarray:
    """Linearly resample ``x`` (sampled on ``[0, 1]``) at ``n`` equally spaced points."""
    return np.interp(np.linspace(0.0, 1.0, n), np.linspace(0.0, 1.0, len(x)), x)


def _mnist1d_transform(
    x: np.ndarray,
    rng: np.random.RandomState,
    *,
    padding: tuple[int, int],
    template_len: int,
    scale_coeff: float,
    max_translation: int,
    corr_noise_scale: float,
    iid_noise_scale: float,
    shear_scale: float,
    final_seq_length: int,
    eps: float = 1e-8,
) -> np.ndarray:
    """One sample from a template: pad, dilate, scale, translate, add noise, shear, subsample."""
    new_x = _pad(x + eps, padding, rng)
    new_x = _interpolate(new_x, template_len + padding[-1])  # dilate
    new_x = new_x * (1 + scale_coeff * (rng.rand() - 0.5))  # scale
    new_x = _translate(new_x, max_translation, rng)
    corr = _corr_noise_like(new_x, corr_noise_scale, rng)
    new_x = np.where(new_x != 0, new_x, corr)  # background (the padding) becomes smooth noise
    new_x = new_x + _iid_noise_like(new_x, iid_noise_scale, rng)
    new_x = _shear(new_x, shear_scale, rng)
    return _interpolate(new_x, final_seq_length)  # subsample


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(
    num_samples: int,
    train_split: float,
    template_len: int,
    padding: tuple[int, int],
    scale_coeff: float,
    max_translation: int,
    corr_noise_scale: float,
    iid_noise_scale: float,
    shear_scale: float,
    final_seq_length: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Generated features ``(n, 1, L)`` float32 and labels (read-only) and the split index."""
    templates = mnist1d_templates()
    if templates.shape[1] != template_len:
        raise UsageError(f"template_len must be {templates.shape[1]}, got {template_len}")
    rng = np.random.RandomState(seed)
    per_class = num_samples // len(templates)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for label, template in enumerate(templates):
        for _ in range(per_class):
            xs.append(
                _mnist1d_transform(
                    template,
                    rng,
                    padding=padding,
                    template_len=template_len,
                    scale_coeff=scale_coeff,
                    max_translation=max_translation,
                    corr_noise_scale=corr_noise_scale,
                    iid_noise_scale=iid_noise_scale,
                    shear_scale=shear_scale,
                    final_seq_length=final_seq_length,
                )
            )
            ys.append(label)
    order = rng.permutation(len(ys))
    x = np.stack(xs)[order]
    y = np.asarray(ys, dtype=np.int64)[order]
    x = (x - x.mean()) / x.std()  # zero mean, unit standard deviation over the whole set
    x32 = np.ascontiguousarray(x.reshape(len(y), 1, final_seq_length), dtype=np.float32)
    x32.flags.writeable = False
    y.flags.writeable = False
    return x32, y, int(len(y) * train_split)


def make_mnist1d(
    *,
    num_samples: int = 5000,
    train_split: float = 0.8,
    template_len: int = 12,
    padding: tuple[int, int] = (36, 60),
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    final_seq_length: int = 40,
    seed: int = 42,
) -> tuple[Dataset, Dataset]:
    """Generate MNIST-1D; return ``(train, test)`` with features ``(n, 1, final_seq_length)``.

    The defaults are those of the reference ``get_dataset_args`` and give the
    canonical dataset: 500 samples per class, shuffled, the first 4000 for training.
    A pure function of its arguments, cached in-process (callers get fresh copies).
    """
    if num_samples < 10:
        raise UsageError(f"num_samples must be >= 10, got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise UsageError(f"train_split must be in (0, 1), got {train_split}")
    low, high = (int(v) for v in padding)
    if not 0 <= low <= high:
        raise UsageError(f"padding must be (low, high) with 0 <= low <= high, got {padding}")
    if max_translation < 1 or final_seq_length < 2 or seed < 0:
        raise UsageError(
            "max_translation must be >= 1, final_seq_length >= 2 and seed >= 0, got "
            f"{max_translation}, {final_seq_length}, {seed}"
        )
    x, y, split = _mnist1d_arrays(
        int(num_samples),
        float(train_split),
        int(template_len),
        (low, high),
        float(scale_coeff),
        int(max_translation),
        float(corr_noise_scale),
        float(iid_noise_scale),
        float(shear_scale),
        int(final_seq_length),
        int(seed),
    )
    train = Dataset(x[:split].copy(), y[:split].copy())
    test = Dataset(x[split:].copy(), y[split:].copy())
    return train, test


def _mnist1d(_data_dir: Path | None, _seed: int) -> tuple[Dataset, Dataset, str]:
    train, test = make_mnist1d()
    source = (
        "MNIST-1D (Greydanus 2020), generated with the reference defaults (5000 samples, "
        "seed 42), standardised, first 4000 train"
    )
    return train, test, source


# --- MNIST from local files ------------------------------------------------------------------

MNIST_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_NPZ_FILE = "mnist.npz"
_IDX_UBYTE = 0x08


def _missing_mnist(data_dir: Path | None, detail: str) -> ConfigError:
    where = f"in {data_dir}" if data_dir is not None else "(no data directory given)"
    return ConfigError(
        f"MNIST files not found {where}: {detail}. Provide the four IDX files "
        f"{', '.join(MNIST_IDX_FILES)} (each optionally gzipped as <name>.gz) or one "
        f"{MNIST_NPZ_FILE} with arrays x_train, y_train, x_test, y_test, and pass their "
        "directory with --data-dir"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DecodeError(f"{path}: not a valid gzip file: {exc}") from None
    return raw


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions (``.gz`` allowed).

    Layout: two zero bytes, type code ``0x08`` (ubyte), ``ndim``, then ``ndim``
    big-endian uint32 sizes, then exactly ``prod(sizes)`` data bytes. Anything else
    raises :class:`DecodeError` naming the file.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DecodeError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    expected_magic = (_IDX_UBYTE << 8) | ndim
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DecodeError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DecodeError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        raise DecodeError(
            f"{path}: IDX dimensions {list(dims)} need {size} data bytes, file has "
            f"{len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(data_dir: Path, name: str) -> Path | None:
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _mnist_pair(
    images: np.ndarray, labels: np.ndarray, where_x: str, where_y: str
) -> Dataset:
    """Validate one (images, labels) pair and convert to ``(n, 1, 28, 28)`` float32 in [0, 1]."""
    if images.ndim == 2 and images.shape[1:] == (784,):
        images = images.reshape(-1, 28, 28)
    elif images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] < 1:
        raise DecodeError(f"{where_x}: expected images of shape (n, 28, 28), got {images.shape}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        if not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DecodeError(f"{where_x}: float images must be finite and in [0, 1]")
    else:
        raise DecodeError(f"{where_x}: images must be uint8 or float, got {images.dtype}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DecodeError(f"{where_y}: expected 1-D integer labels, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DecodeError(
            f"{where_y}: {labels.shape[0]} labels for {images.shape[0]} images in {where_x}"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DecodeError(f"{where_y}: labels must be digits 0..9, got [{labels.min()}, {labels.max()}]")
    return Dataset(np.ascontiguousarray(x.reshape(-1, 1, 28, 28)), labels.astype(np.int64))


def _load_mnist_npz(path: Path) -> tuple[Dataset, Dataset]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz]
            if missing:
                raise DecodeError(f"{path}: missing arrays {', '.join(missing)}")
            arrays = {k: np.asarray(npz[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DecodeError(f"{path}: not a valid .npz archive of plain arrays: {exc}") from None
    train = _mnist_pair(arrays["x_train"], arrays["y_train"], f"{path}[x_train]", f"{path}[y_train]")
    test = _mnist_pair(arrays["x_test"], arrays["y_test"], f"{path}[x_test]", f"{path}[y_test]")
    return train, test


def load_mnist(data_dir: Path | None) -> tuple[Dataset, Dataset, str]:
    """MNIST from ``data_dir`` (see the module docstring); return ``(train, test, source)``."""
    if data_dir is None:
        raise _missing_mnist(None, "no data directory given")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise _missing_mnist(data_dir, "not a directory")
    npz = data_dir / MNIST_NPZ_FILE
    if npz.is_file():
        train, test = _load_mnist_npz(npz)
        return train, test, f"MNIST from {npz}"
    found = {name: _find_idx(data_dir, name) for name in MNIST_IDX_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise _missing_mnist(data_dir, f"missing {', '.join(missing)} and no {MNIST_NPZ_FILE}")
    paths = [p for p in found.values() if p is not None]
    arrays = [read_idx(p, ndim=3 if i % 2 == 0 else 1) for i, p in enumerate(paths)]
    train = _mnist_pair(arrays[0], arrays[1], str(paths[0]), str(paths[1]))
    test = _mnist_pair(arrays[2], arrays[3], str(paths[2]), str(paths[3]))
    return train, test, f"MNIST IDX files from {data_dir}"


def _mnist(data_dir: Path | None, _seed: int) -> tuple[Dataset, Dataset, str]:
    return load_mnist(data_dir)


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            DatasetSpec("digits", "scikit-learn 8x8 digits", (1, 8, 8), 10, False, True, _digits),
            DatasetSpec(
                "digits28", "scikit-learn digits resized to 28x28", (1, 28, 28), 10, False, True,
                _digits28,
            ),
            DatasetSpec("mnist1d", "procedural MNIST-1D", (1, 40), 10, False, False, _mnist1d),
            DatasetSpec("mnist", "MNIST from local files", (1, 28, 28), 10, True, False, _mnist),
        )
    }
)
