"""The skew-normal distribution: a moment fit and the log of its CDF deep into the left tail.

The exposure estimate of Carlini et al. (2019, "The Secret Sharer", sec. 4.2) fits a
skew-normal to the log-perplexities of random candidates and reads a secret's rank off the
fitted CDF; this is that fit (method of moments: mean, variance, skewness) without scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_SKEW = 0.99  # a skew-normal's skewness is below 0.9953 in size: clip the sample's


@dataclass(frozen=True)
class SkewNormal:
    xi: float      # location
    omega: float   # scale
    alpha: float   # shape (0: the normal)

    @classmethod
    def fit(cls, x: np.ndarray) -> "SkewNormal":
        x = np.asarray(x, dtype=np.float64)
        mean, std = float(x.mean()), float(x.std())
        if not std > 0:
            raise ValueError("cannot fit a distribution to identical values")
        skew = float(np.clip(((x - mean) ** 3).mean() / std ** 3, -MAX_SKEW, MAX_SKEW))
        c = (2 * abs(skew) / (4 - math.pi)) ** (2 / 3)
        delta = math.copysign(math.sqrt(math.pi / 2 * c / (1 + c)), skew)
        omega = std / math.sqrt(1 - 2 * delta ** 2 / math.pi)
        return cls(mean - omega * delta * math.sqrt(2 / math.pi), omega,
                   delta / math.sqrt(1 - delta ** 2))

    def log_cdf(self, x: float) -> float:
        """ln P(X <= x), accurate far into the left tail (no 1 - ... cancellation)."""
        z, a = (x - self.xi) / self.omega, self.alpha
        if z >= -2:
            lo = min(z, 0.0) - 14.0
        else:  # the density falls off at about this rate per unit left of z
            lo = z - min(14.0, 40.0 / (abs(z) * (1 + max(a, 0.0) ** 2)))
        t = np.linspace(lo, z, 8001)
        log_f = math.log(2) + _log_phi(t) + _log_ndtr(a * t)
        w = np.full(len(t), t[1] - t[0])
        w[[0, -1]] /= 2  # trapezoid
        peak = log_f.max()
        return float(peak + math.log(float(np.sum(np.exp(log_f - peak) * w))))


def _log_phi(t: np.ndarray) -> np.ndarray:
    return -0.5 * t * t - 0.5 * math.log(2 * math.pi)


def _log_ndtr(u: np.ndarray) -> np.ndarray:
    """ln Phi(u), elementwise; the asymptotic series where erfc underflows."""
    u = np.asarray(u, dtype=np.float64)
    out = np.empty_like(u)
    mid = u > -20
    out[mid] = np.log(0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in u[mid]]))
    far = u[~mid]
    out[~mid] = _log_phi(far) - np.log(-far) + np.log1p(-1 / far ** 2 + 3 / far ** 4)
    return out
