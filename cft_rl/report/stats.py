"""Statistics for comparing methods: t intervals over seeds and a paired bootstrap over problems.

Seeds and problems are the two sources of noise in an experiment grid. `mean_ci` puts an
interval on a mean over a handful of seeds; `paired_bootstrap` compares two methods on the
same problems, resampling problems (paired) and each method's seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Replicates per chunk in `paired_bootstrap`: bounds the count matrices to chunk x problems.
_CHUNK = 1000
# Bootstrap differences this close to zero are rounding noise of an exact tie.
_TIE = 1e-12


def student_t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile of Student's t with `df` (integer) degrees of freedom.

    Exact up to bisection precision: P(|T| <= t) has a finite closed form in
    theta = atan(t / sqrt(df)) for integer df (Abramowitz & Stegun 26.7.3-4), which rises
    monotonically from 0 to 1 as theta goes from 0 to pi/2, so theta is found by bisection.
    """
    if df < 1:
        raise ValueError(f"need df >= 1, got {df}")
    if not 0 < probability < 1:
        raise ValueError(f"need 0 < probability < 1, got {probability}")
    if probability < 0.5:
        return -student_t_quantile(1 - probability, df)
    central = 2 * probability - 1  # P(|T| <= t) for the upper quantile t
    low, high = 0.0, math.pi / 2
    for _ in range(80):
        middle = (low + high) / 2
        if _central_mass(middle, df) < central:
            low = middle
        else:
            high = middle
    return math.sqrt(df) * math.tan((low + high) / 2)


def _central_mass(theta: float, df: int) -> float:
    """P(|T| <= sqrt(df) tan(theta)) for T ~ t(df)."""
    cos2 = math.cos(theta) ** 2
    if df % 2 == 0:
        # sin(theta) * sum_j c_j cos^(2j)(theta), c_0 = 1, c_j = c_(j-1) (2j-1)/(2j)
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= cos2 * (2 * j - 1) / (2 * j)
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    # (2/pi) (theta + sin cos * sum_j c_j cos^(2j)), c_0 = 1, c_j = c_(j-1) (2j)/(2j+1)
    term, total = 1.0, 1.0
    for j in range(1, (df - 1) // 2):
        term *= cos2 * (2 * j) / (2 * j + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` (one per seed) with its Student-t interval.

    With a single value there is no spread to measure: the interval is (mean, mean), and
    reports print "n=1" instead of it.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("mean_ci of no values")
    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    half = (
        student_t_quantile((1 + level) / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size)
    )
    return mean, mean - half, mean + half


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 10000, seed: int = 0
) -> dict[str, float]:
    """Difference of method A and method B, mean(a) - mean(b), with a bootstrap interval.

    `a` is [seeds_a, problems] and `b` is [seeds_b, problems] of per-problem scores on the same
    problems in the same column order. Each replicate resamples the problems with replacement,
    the same ones for a and b (the pairing), and independently the seeds of a and of b; its
    statistic is the mean over the resampled seeds and problems of a minus that of b.

    Resampling n seeds with replacement gives their mean a variance of (n-1)/n of s^2/n, far
    too little with 3 seeds; so each side's seeds are first spread about their mean by
    sqrt(n/(n-1)) (`widen_seed_spread`), which makes that variance s^2/n. The interval is
    still a percentile one, narrower than a Student-t interval over so few seeds would be.

    Returns estimate, low and high (the 2.5 and 97.5 percentiles of the replicates) and
    p_value: two-sided, bootstrap sign-test style, 2 * min(share of replicates <= 0, share
    >= 0) capped at 1; its resolution is 2 / n_boot (0 means below that). The draws come from
    numpy's default Generator seeded with `seed`, in this order: the problem indices of all
    replicates, [n_boot, problems], then the seed indices of a, [n_boot, seeds_a], then of b.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not a.size or not b.size:
        raise ValueError(
            f"need [seeds, problems] arrays on the same problems: {a.shape}, {b.shape}"
        )
    estimate = float(a.mean() - b.mean())
    a, b = widen_seed_spread(a), widen_seed_spread(b)
    rng = np.random.default_rng(seed)
    problems = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
    seeds_a = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    seeds_b = rng.integers(0, b.shape[0], size=(n_boot, b.shape[0]))
    stats = np.concatenate(
        [
            _difference(a, b, seeds_a[rows], seeds_b[rows], problems[rows])
            for rows in (slice(i, i + _CHUNK) for i in range(0, n_boot, _CHUNK))
        ]
    )
    stats[np.abs(stats) <= _TIE] = 0.0
    low, high = np.percentile(stats, [2.5, 97.5])
    p_value = min(1.0, 2 * min(float(np.mean(stats <= 0)), float(np.mean(stats >= 0))))
    return {
        "estimate": estimate,
        "low": float(low),
        "high": float(high),
        "p_value": p_value,
    }


def widen_seed_spread(scores: np.ndarray) -> np.ndarray:
    """[seeds, problems] scores whose rows are moved away from the mean row by sqrt(n/(n-1)):
    the bootstrap's seed resampling then has the unbiased variance of a mean of n seeds."""
    n = scores.shape[0]
    if n < 2:
        return scores
    mean = scores.mean(axis=0, keepdims=True)
    return mean + np.sqrt(n / (n - 1)) * (scores - mean)


def _difference(
    a: np.ndarray, b: np.ndarray, seeds_a: np.ndarray, seeds_b: np.ndarray, problems: np.ndarray
) -> np.ndarray:
    """Per replicate r, mean(a[seeds_a[r]][:, problems[r]]) - the same of b, computed from how
    often each seed and problem was drawn (seed_counts @ scores @ problem_counts / draws)
    without materialising the resampled matrices."""
    problem_counts = _counts(problems, a.shape[1])
    return _weighted_mean(a, seeds_a, problem_counts) - _weighted_mean(b, seeds_b, problem_counts)


def _weighted_mean(scores: np.ndarray, seeds: np.ndarray, problem_counts: np.ndarray) -> np.ndarray:
    per_seed = problem_counts @ scores.T  # [replicates, seeds]: sums over drawn problems
    draws = seeds.shape[1] * problem_counts.shape[1]
    return (per_seed * _counts(seeds, scores.shape[0])).sum(axis=1) / draws


def _counts(indices: np.ndarray, size: int) -> np.ndarray:
    """[replicates, size]: how often each index occurs in each row of `indices`."""
    rows = indices.shape[0]
    offsets = indices + size * np.arange(rows)[:, None]
    return np.bincount(offsets.ravel(), minlength=rows * size).reshape(rows, size).astype(float)
