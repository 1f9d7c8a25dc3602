"""Deterministic randomness for the synthetic market: stable keys, counter-based hashing, random
draws and the multi-scale value-noise path of a symbol's log price.

Everything here is a pure function of its arguments (no global state, no process-dependent
hashing): the same key and index give the same number in every process, on every platform numpy
supports. Keys are 64-bit integers made by :func:`key_of` from strings and integers; a key and an
integer index are mixed with the splitmix64 finaliser, so any index (of any sign) can be drawn
directly, without iterating from an origin. Arrays are numpy ``uint64``/``float64``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

__all__ = ["NOISE_NORM", "SCALES", "Draws", "hash_at", "key_of", "noise_path", "normal_at",
           "regime", "uniform_grid", "unit"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO53 = 2.0 ** -53

SCALES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)   # value-noise lattices, in days
NOISE_NORM = 0.4836   # makes the daily log-return std ~= sigma_daily (calibrated numerically)
_SCALE_COL = np.array(SCALES, dtype=np.float64)[:, None]
_SQRT_COL = np.array([math.sqrt(s) for s in SCALES], dtype=np.float64)[:, None]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _S30)
        x = x * _C1
        x = x ^ (x >> _S27)
        x = x * _C2
        return x ^ (x >> _S31)


def key_of(*parts: Any) -> int:
    """A stable 64-bit key for a tuple of strings/ints (same in every process)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def hash_at(key: int, idx: np.ndarray) -> np.ndarray:
    """One uint64 per integer index (any sign) for a key."""
    with np.errstate(over="ignore"):
        return _mix(np.asarray(idx).astype(np.int64).view(np.uint64) * _GOLDEN + np.uint64(key))


def uniform_grid(keys: np.ndarray, first: int, size: int) -> np.ndarray:
    """``unit(hash_at(key, first .. first + size - 1))`` for each key, as rows, computed in
    place (the same bits with fewer temporary arrays): uniforms in [0, 1)."""
    x = np.arange(first, first + size, dtype=np.uint64)[None, :] * _GOLDEN \
        + np.asarray(keys, dtype=np.uint64)[:, None]
    tmp = np.empty_like(x)
    for shift, factor in ((_S30, _C1), (_S27, _C2)):
        np.right_shift(x, shift, out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        np.multiply(x, factor, out=x)
    np.right_shift(x, _S31, out=tmp)
    np.bitwise_xor(x, tmp, out=x)
    np.right_shift(x, _S11, out=x)
    out = x.astype(np.float64)
    out *= _TWO53
    return out


def unit(h: np.ndarray) -> np.ndarray:
    """uint64 -> float in [0, 1)."""
    return (h >> _S11).astype(np.float64) * _TWO53


def normal_at(key: int, idx: np.ndarray) -> np.ndarray:
    """A standard normal per index (Box-Muller on two hashed uniforms)."""
    u1 = unit(hash_at(key, idx))
    u2 = unit(hash_at(key ^ 0x5DEECE66D, idx))
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


class Draws:
    """A deterministic stream of random numbers for one key (the splitmix64 sequence of indices
    0, 1, 2, ...): each call consumes the next indices, so the order of calls matters."""

    __slots__ = ("_key", "_n")

    def __init__(self, key: int):
        self._key = key
        self._n = 0

    def bits(self, n: int) -> np.ndarray:
        idx = np.arange(self._n, self._n + n, dtype=np.int64)
        self._n += n
        return hash_at(self._key, idx)

    def uniform(self, n: int) -> np.ndarray:
        return unit(self.bits(n))

    def normal(self, n: int) -> np.ndarray:
        u1, u2 = self.uniform(n), self.uniform(n)
        return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)

    def exponential(self, n: int) -> np.ndarray:
        return -np.log1p(-self.uniform(n))

    def integers(self, lo: int, hi: int, n: int) -> np.ndarray:
        """Integers in [lo, hi)."""
        return lo + (self.uniform(n) * (hi - lo)).astype(np.int64)

    def choice(self, items: np.ndarray, cumweights: np.ndarray, n: int) -> np.ndarray:
        """``n`` items drawn with the weights whose cumulative sums are ``cumweights``."""
        return items[np.searchsorted(cumweights, self.uniform(n) * cumweights[-1], side="right")]


def regime(key: int, day: np.ndarray) -> np.ndarray:
    """A slowly varying volatility multiplier (mean ~1) at ``day`` (days since 1970-01-01,
    float): log-normal, linearly interpolated between lattice points 48 days apart."""
    x = day / 48.0
    k = np.floor(x)
    f = x - k
    k0 = int(k.min())
    lattice = normal_at(key ^ 0xA5A5A5A5, np.arange(k0, int(k.max()) + 2, dtype=np.int64))
    i = (k - k0).astype(np.int64)
    v = lattice[i] * (1 - f) + lattice[i + 1] * f
    return np.exp(0.35 * v - 0.06)


def noise_path(key: int, sigma: float, t: np.ndarray) -> np.ndarray:
    """The log-price noise path at times ``t`` (days since 1970-01-01, float): value noise on
    lattices of 1, 2, 4 ... 512 days (smoothstep-interpolated), each scale's amplitude ~
    sqrt(scale), the 1- and 2-day scales modulated by :func:`regime` (volatility clustering);
    scaled so that the daily log-return standard deviation is about ``sigma``."""
    nscales = len(SCALES)
    t = np.asarray(t, dtype=np.float64)
    k = np.floor(t[None, :] / _SCALE_COL)                 # lattice cell of each t, per scale
    k0, k1 = k.min(axis=1), k.max(axis=1)
    sizes = (k1 - k0).astype(np.int64) + 2                 # lattice points k0 .. k1 + 1
    pos = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    lattice = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(pos - k0.astype(np.int64), sizes)
    values = normal_at(key ^ 0x6E01, lattice * nscales + np.repeat(np.arange(nscales), sizes))
    fast = int(sizes[0] + sizes[1])   # volatility clustering on the 1- and 2-day scales
    values[:fast] *= regime(key, (lattice[:fast] * np.repeat(SCALES[:2], sizes[:2])).astype(np.float64))
    f = t[None, :] / _SCALE_COL - k
    f = f * f * (3.0 - 2.0 * f)
    i = (k - k0[:, None]).astype(np.int64) + pos[:, None]
    v0, v1 = values[i], values[i + 1]
    parts = _SQRT_COL * (v0 + (v1 - v0) * f)
    total = np.zeros_like(t)
    for row in parts:               # scale by scale, in this order (the sums are not reordered)
        total += row
    return total * (NOISE_NORM * sigma)
