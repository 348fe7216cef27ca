"""Walsh–Hadamard transforms: the fast transform (``fwht``) and the robust sparse one (``spright``).

``fwht`` is written on the language: the Hadamard matrix of order N = 2ⁿ is the Kronecker product
of small Hadamard matrices, H_N = H_{2^r1} ⊗ … ⊗ H_{2^rc}, so the transform is one compiled kernel,
``y[i] = K[i,j] * x[j]`` with ``K = sd.kron(H16, …, H16)``. The rewrite stage contracts the composite
factor by factor (one pass over x per factor, each 2^r multiply-adds per entry), which is the
butterfly grouped r stages at a time: O(N log N) work, ⌈n/4⌉ passes over memory instead of n.
Radix 16 measured best at N = 2²⁰ on the 2-core development machine (24 ms; radix 32: 34 ms, a
stage kernel per radix-16 digit over a reshaped (a, 16, b) view: 52 ms, numpy's butterfly: 40 ms).

``spright`` samples a signal whose spectrum is K-sparse at O(K log N) positions chosen by random
subsampling matrices over GF(2) (the "sparse-graph code"), takes small ``fwht``s of the samples
(each bin of the small transform holds the sum of the coefficients that hash to it), recognises bins
that hold exactly one coefficient from the signs across shifted sample sets, and peels.
"""

from __future__ import annotations

import math
import time
import warnings
from numbers import Integral, Real

import numpy as np

from ..compiler import compile as _compile
from ..composite import kron

__all__ = ["SprightResult", "fwht", "spright"]

# y = H_N x and, for a batch of rows, Y = X H_Nᵀ (H is symmetric); H_N is a kron composite, so both
# are contracted factor by factor by the rewrite stage (README, "Pruning, structured operators").
_MATVEC = _compile("y[i] = K[i,j] * x[j]", name="fwht")
_BATCHED = _compile("Y[b,i] = K[i,j] * X[b,j]", name="fwht_batched")
_RADIX_BITS = 4  # factors of at most 16x16 (see the module docstring for the measurement)
_factors: dict = {}


def _array_module(x):
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def _hadamard(bits: int, dtype, xp):
    key = (bits, np.dtype(dtype).str, xp.__name__)
    if key not in _factors:
        h = np.ones((1, 1))
        for _ in range(bits):
            h = np.block([[h, h], [h, -h]])
        _factors[key] = xp.asarray(h.astype(dtype))
    return _factors[key]


def _digits(n: int) -> list[int]:
    """n bits split into ⌈n/4⌉ digits of nearly equal size (10 -> 4, 3, 3)."""
    count = -(-n // _RADIX_BITS)
    return [n // count + (k < n % count) for k in range(count)]


def _log2_length(length: int, what: str) -> int:
    if length < 1 or length & (length - 1):
        raise ValueError(f"{what} must be a power of two (the Walsh–Hadamard transform is defined for N = 2**n); "
                         f"got {length}. Pad with zeros to {1 << max(length - 1, 0).bit_length()}.")
    return length.bit_length() - 1


def fwht(x, *, axis=-1):
    """Fast Walsh–Hadamard transform along ``axis``, natural (Hadamard) order, unnormalised.

    .. math:: y = H_N\\,x, \\qquad H_N[k, m] = (-1)^{\\langle k, m\\rangle}, \\quad N = 2^n

    where ⟨k, m⟩ counts the bits set in both k and m (so ``fwht(x) == scipy.linalg.hadamard(N) @ x``
    and ``fwht(fwht(x)) == N * x``). Computed as one sparsedsl kernel with H_N given as the Kronecker
    composite of 16×16 Hadamard factors: O(N log N) operations, on the CPU's cores or, for a cupy
    array, on the GPU.

    Parameters
    ----------
    x : array_like or cupy.ndarray
        Any shape; the length along ``axis`` must be a power of two. Integer and boolean inputs are
        transformed exactly in int64; float32, float64 and complex inputs keep their dtype (float16
        is computed and returned in float32).
    axis : int, default -1
        The axis to transform; every other axis is a batch axis.

    Returns
    -------
    y : ndarray (cupy.ndarray for a cupy input)
        The transform, with the shape of ``x``.

    References
    ----------
    Fino and Algazi, "Unified Matrix Treatment of the Fast Walsh-Hadamard Transform", 1976.

    Examples
    --------
    >>> fwht(np.array([1.0, 0.0, 1.0, 0.0]))
    array([2., 2., 0., 0.])
    """
    xp = _array_module(x)
    x = xp.asarray(x)
    if x.ndim == 0:
        raise ValueError("fwht() needs x with at least one axis; got a 0-d array")
    if not isinstance(axis, Integral) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"The 'axis' parameter of fwht() must be an int in [{-x.ndim}, {x.ndim}) for x of shape "
                         f"{tuple(x.shape)}; got {axis!r}")
    n = _log2_length(x.shape[axis], f"The length of x along axis {axis}")
    if x.dtype.kind == "c":  # kernels take real storage; the transform is linear
        return fwht(x.real, axis=axis) + 1j * fwht(x.imag, axis=axis)
    if x.dtype.kind in "biu":
        x = x.astype(np.int64)
    elif x.dtype.kind not in "fc":
        raise ValueError(f"fwht() transforms numbers; got x of dtype {x.dtype}")
    elif x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    moved = xp.moveaxis(x, axis, -1)
    if n == 0:
        return x.copy()
    digits = _digits(n)
    if len(digits) == 1:  # kron() takes two factors or more; H_N = H_N ⊗ [1]
        digits.append(0)
    K = kron(*[_hadamard(bits, x.dtype, xp) for bits in digits])
    rows = xp.ascontiguousarray(moved.reshape(-1, 1 << n))
    if rows.shape[0] == 1:
        out = _MATVEC(K=K, x=rows[0])
    elif rows.shape[0] == 0:
        out = rows.copy()
    else:
        out = _BATCHED(K=K, X=rows)
    return xp.moveaxis(xp.asarray(out).reshape(moved.shape), -1, axis)


# ---- SPRIGHT --------------------------------------------------------------------------------------


class SprightResult:
    """What ``spright`` found: unpacks as ``(indices, values)``; also ``n_samples``, ``time_s``,
    ``n_rounds`` (peeling rounds), ``converged`` (every bin explained) and ``noise_var`` (per sample)."""

    def __init__(self, indices, values, *, n_samples, time_s, n_rounds, converged, noise_var):
        self.indices, self.values = indices, values
        self.n_samples, self.time_s, self.n_rounds = n_samples, time_s, n_rounds
        self.converged, self.noise_var = converged, noise_var

    def __iter__(self):
        return iter((self.indices, self.values))

    def __repr__(self):
        return (f"SprightResult({len(self.indices)} coefficients, n_samples={self.n_samples}, "
                f"time_s={self.time_s:.3g}, converged={self.converged})")


def _parity(a):
    return (np.bitwise_count(a) & 1).astype(np.int8)


def _full_rank_columns(rng, n: int, b: int) -> np.ndarray:
    """b random n-bit integers, linearly independent over GF(2): the columns of a subsampling matrix."""
    while True:
        cols = rng.integers(0, 1 << n, size=b, dtype=np.int64)
        basis: list[int] = []
        for c in cols.tolist():
            for v in basis:
                c = min(c, c ^ v)
            if c:
                basis.append(c)
                basis.sort(reverse=True)
        if len(basis) == b:
            return cols


def _span(cols: np.ndarray) -> np.ndarray:
    """M·l over GF(2) for every l in [0, 2^b), as integers (index l's bits pick columns)."""
    out = np.zeros(1 << len(cols), dtype=np.int64)
    for t, c in enumerate(cols.tolist()):
        out[1 << t: 2 << t] = out[: 1 << t] ^ c
    return out


def _check_int(value, name, low, high=None):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"The '{name}' parameter of spright() must be an int {rng}; got {value!r}")
    return int(value)


def spright(sample, n, K, *, snr_db=None, noise_var=None, n_stages=3, n_bins=None, n_repeats=3,
            max_iter=30, random_state=None):
    """SPRIGHT: the K-sparse Walsh–Hadamard spectrum of a length-2ⁿ signal from O(K log N) samples.

    .. math:: X = \\tfrac{1}{N}\\,\\mathrm{fwht}(x), \\qquad \\|X\\|_0 \\le K, \\qquad
              \\text{observed: } x[m] + w[m] \\text{ for chosen } m

    Each of ``n_stages`` stages draws a random full-rank subsampling matrix M (n × b over GF(2)) and
    reads the signal at M·l ⊕ d for l < B = 2^b and every offset d of a set of P = n_repeats·(n − b + 1)
    offsets: random bases r and r ⊕ wᵢ, where the wᵢ complete M's columns to a basis of GF(2)ⁿ. A
    B-point ``fwht`` of each sample set puts in bin j the sum of the coefficients X[k] with Mᵀk = j,
    each signed by (-1)^⟨k,d⟩. A bin is a singleton when one (k, X[k]) explains its P values within the
    noise: the bin gives Mᵀk, the signs of U[r ⊕ wᵢ]·U[r] (summed over the bases) give ⟨k, wᵢ⟩, and
    one GF(2) solve gives k. Found coefficients are subtracted from their bins in every stage
    (peeling) until no bin holds energy above the noise. When the design would read N positions or
    more (small N, large K) the whole signal is read and transformed instead.

    Parameters
    ----------
    sample : callable or array_like
        ``sample(indices) -> values``, an int64 array of positions in [0, 2ⁿ) to the (noisy) signal
        there; or the whole signal as an array of length 2ⁿ. Every position asked for is counted.
    n : int
        log2 of the signal length N.
    K : int
        The number of nonzero coefficients to expect (sets the number of bins).
    snr_db : float, optional
        Signal-to-noise ratio of the samples, ‖x‖²/(N σ²) in dB, used to set the noise level of the
        bin tests; the noise variance σ² is then estimated from the samples' energy.
    noise_var : float, optional
        σ², the noise variance per sample, if known (instead of ``snr_db``). With neither, the
        samples are taken as noiseless.
    n_stages : int, default 3
        Stages (independent hashes). Three is the paper's choice; peeling needs at least two.
    n_bins : int, optional
        Bins per stage, a power of two; default the smallest power of two ≥ 2K (at least 16, at most N).
    n_repeats : int, default 3
        Random offset bases; more makes bit decisions and the singleton test more robust to noise.
    max_iter : int, default 30
        Peeling rounds at most.
    random_state : int or numpy.random.Generator, optional
        Seeds the subsampling matrices and offsets.

    Returns
    -------
    result : SprightResult
        Unpacks as ``(indices, values)``: the recovered coefficient positions, sorted, and X at them.
        ``result.n_samples`` counts the positions sampled, ``result.time_s`` the wall time, and
        ``result.converged`` says whether every bin was explained (else a RuntimeWarning names the knob).

    References
    ----------
    Li, Bradley and Ramchandran, "SPRIGHT: A Fast and Robust Framework for Sparse Walsh-Hadamard
    Transform", 2015. Scheibler, Haghighatshoar and Vetterli, "A Fast Hadamard Transform for Signals
    With Sublinear Sparsity in the Transform Domain", 2015.

    Examples
    --------
    >>> X = np.zeros(1024); X[[3, 300, 777]] = [1.0, -2.0, 0.5]
    >>> idx, val = spright(fwht(X), 10, 3, random_state=0)
    >>> idx.tolist(), np.round(val, 6).tolist()
    ([3, 300, 777], [1.0, -2.0, 0.5])
    """
    start = time.perf_counter()
    n = _check_int(n, "n", 1, 62)
    N = 1 << n
    K = _check_int(K, "K", 1, N)
    n_stages = _check_int(n_stages, "n_stages", 2)
    n_repeats = _check_int(n_repeats, "n_repeats", 1)
    max_iter = _check_int(max_iter, "max_iter", 1)
    if n_bins is None:
        b = min(n, max(4, math.ceil(math.log2(2 * K))))
    else:
        if isinstance(n_bins, bool) or not isinstance(n_bins, Integral) or n_bins < 2 or n_bins & (n_bins - 1) \
                or n_bins > N:
            raise ValueError(f"The 'n_bins' parameter of spright() must be a power of two in [2, 2**n = {N}]; "
                             f"got {n_bins!r}")
        b = int(n_bins).bit_length() - 1
    if snr_db is not None and noise_var is not None:
        raise ValueError("spright() takes 'snr_db' or 'noise_var', not both; got both")
    if snr_db is not None and (not isinstance(snr_db, Real) or not math.isfinite(snr_db)):
        raise ValueError(f"The 'snr_db' parameter of spright() must be a finite number (dB); got {snr_db!r}")
    if noise_var is not None and (not isinstance(noise_var, Real) or not noise_var >= 0 or
                                  not math.isfinite(noise_var)):
        raise ValueError(f"The 'noise_var' parameter of spright() must be a finite number >= 0; got {noise_var!r}")
    if not callable(sample):
        signal = np.asarray(sample)
        if signal.shape != (N,):
            raise ValueError(f"The 'sample' parameter of spright() must be a callable or an array of length "
                             f"2**n = {N}; got an array of shape {signal.shape}")
        sample = signal.__getitem__
    rng = np.random.default_rng(random_state)
    stages = [_Stage(rng, n, b, n_repeats) for _ in range(n_stages)]
    B, P = 1 << b, stages[0].offsets.size
    if n_stages * P * B >= N:  # the sparse design would read every position: read them once instead
        return _dense_spectrum(sample, n, K, snr_db, noise_var, start)
    positions = np.stack([st.positions for st in stages])  # (C, P, B)
    values = _read(sample, positions.reshape(-1))
    bins = fwht(values.reshape(-1, B)).reshape(n_stages, P, B) / B  # (C, P, B)
    sigma2 = _noise(values, snr_db, noise_var)
    # Tests on a bin's P values: the mean square left unexplained must be within (1 + gamma) of the
    # noise per bin value, sigma2 / B (plus a floor relative to the signal for noiseless data). The mean
    # of P squared Gaussians has relative spread sqrt(2/P); gamma = max(1, 5 sqrt(2/P)) rejects a true
    # singleton with probability < 1e-5 and still sits far below a second coefficient's energy.
    floor = 1e-10 * float(np.mean(values ** 2)) + 1e-300
    threshold = (1.0 + max(1.0, 5.0 * math.sqrt(2.0 / P))) * sigma2 / B + floor

    found: dict[int, float] = {}
    converged, rounds = False, 0
    while rounds < max_iter:
        rounds += 1
        live = np.mean(bins ** 2, axis=1) > threshold  # (C, B): not a zero-ton
        if not live.any():
            converged = True
            break
        new: dict[int, list] = {}
        for c, st in enumerate(stages):
            slot = np.nonzero(live[c])[0]
            if not len(slot):
                continue
            u = bins[c][:, slot].T  # (nlive, P)
            k = st.decode(slot, u)
            s = st.signs(k)
            amp = np.mean(u * s, axis=1)
            # a singleton: its k explains the values within the noise, and its amplitude itself stands
            # out of the noise (a zero-ton whose noise crossed the energy test fits some k just as well)
            single = (np.mean((u - amp[:, None] * s) ** 2, axis=1) <= threshold) & (amp ** 2 > threshold)
            for kk, a in zip(k[single].tolist(), amp[single].tolist()):
                new.setdefault(kk, []).append(a)
        if not new:
            break
        ks = np.fromiter(new, dtype=np.int64, count=len(new))
        amps = np.array([np.mean(v) for v in new.values()])
        for c, st in enumerate(stages):  # peel: take each found coefficient out of its bin in every stage
            np.subtract.at(bins[c].T, st.hash(ks), amps[:, None] * st.signs(ks))
        for kk, a in zip(ks.tolist(), amps.tolist()):
            found[kk] = found.get(kk, 0.0) + a
    if not converged:
        warnings.warn(f"spright() stopped after {rounds} peeling rounds with bins it could not explain; the "
                      f"spectrum may have more than K={K} coefficients: raise 'K' or 'n_bins'; for noisy samples "
                      f"give 'snr_db' or 'noise_var' (now {'given' if sigma2 > 0 else 'taken as noiseless'}) or "
                      f"raise 'n_repeats'; 'max_iter' allows more rounds", RuntimeWarning, stacklevel=2)
    # a k peeled wrongly and later taken back (the bins then show it with the opposite sign) sums to ~0
    keep = {kk: a for kk, a in found.items() if a * a > threshold}
    indices = np.array(sorted(keep), dtype=np.int64)
    return SprightResult(indices, np.array([keep[kk] for kk in indices.tolist()], dtype=np.float64),
                         n_samples=int(positions.size), time_s=time.perf_counter() - start, n_rounds=rounds,
                         converged=converged, noise_var=sigma2)


def _read(sample, positions):
    values = np.asarray(sample(positions), dtype=np.float64)
    if values.shape != positions.shape:
        raise ValueError(f"sample(indices) must return one real value per index: asked for {positions.size}, "
                         f"got an array of shape {values.shape}")
    return values


def _noise(values, snr_db, noise_var) -> float:
    """σ² per sample: given, or from the samples' mean square E[x²] + σ² = σ² (1 + SNR)."""
    if noise_var is not None:
        return float(noise_var)
    if snr_db is not None:
        return float(np.mean(values ** 2)) / (1.0 + 10.0 ** (snr_db / 10.0))
    return 0.0


def _dense_spectrum(sample, n, K, snr_db, noise_var, start):
    """Small N (the hashing design would sample N positions or more): read the whole signal, take its
    fwht and keep the K largest coefficients that stand out of the noise (|X| > 5 σ/√N)."""
    N = 1 << n
    values = _read(sample, np.arange(N, dtype=np.int64))
    X = fwht(values) / N
    sigma2 = _noise(values, snr_db, noise_var)
    floor = 5.0 * math.sqrt(sigma2 / N) + 1e-8 * float(np.max(np.abs(X), initial=0.0))
    order = np.argsort(-np.abs(X), kind="stable")[:K]
    order = np.sort(order[np.abs(X[order]) > floor])
    return SprightResult(order.astype(np.int64), X[order], n_samples=N, time_s=time.perf_counter() - start,
                         n_rounds=0, converged=True, noise_var=sigma2)


def _gf2_inverse(rows: list[int], n: int) -> list[int]:
    """The inverse of an invertible n×n matrix over GF(2) whose row t is the n-bit integer rows[t]."""
    a = [(r, 1 << t) for t, r in enumerate(rows)]  # (row, the identity row it came from)
    for col in range(n):
        pivot = next(t for t in range(col, n) if a[t][0] >> col & 1)
        a[col], a[pivot] = a[pivot], a[col]
        for t in range(n):
            if t != col and a[t][0] >> col & 1:
                a[t] = (a[t][0] ^ a[col][0], a[t][1] ^ a[col][1])
    return [a[q][1] for q in range(n)]  # row q of A⁻¹: which of A's rows sum to unit vector q


class _Stage:
    """One hash: subsampling matrix M (b columns m_t), bin j = Mᵀk; offsets r and r ⊕ w_i, where
    m_1..m_b, w_1..w_{n-b} is a basis of GF(2)ⁿ. The sign of U[r ⊕ w_i]·U[r] in a singleton bin is
    (-1)^⟨k, w_i⟩, so the bin and these n - b bits give k by one GF(2) solve; and since no w_i lies in
    span(M), the sample sets r ⊕ w_i ⊕ span(M) are distinct cosets (independent noise)."""

    def __init__(self, rng, n, b, repeats):
        self.n, self.b = n, b
        self.columns = _full_rank_columns(rng, n, b)
        basis = {}  # pivot bit -> reduced vector, for the complement's independence test
        for c in self.columns.tolist():
            _insert(basis, c)
        self.extra = [1 << i for i in range(n) if _insert(basis, 1 << i)]
        self.rows = self.columns.tolist() + self.extra  # A k = (Mᵀk, ⟨k, w⟩)
        self.inverse = np.array(_gf2_inverse(self.rows, n), dtype=np.int64)
        bases = self._bases(rng, repeats)
        shifts = np.array([0] + self.extra, dtype=np.int64)
        self.offsets = (bases[:, None] ^ shifts[None, :]).reshape(-1)  # (repeats * (n - b + 1),)
        self.repeats = repeats
        self.positions = _span(self.columns)[None, :] ^ self.offsets[:, None]  # (P, B)

    def _bases(self, rng, repeats):
        """Bases r_j whose offset sets r_j ⊕ {0, w_i} fall in pairwise different cosets of span(M) (so every
        sample is read once and the noise of the P bin values is independent): their coordinates β_j along
        the w's must differ in at least 3 bits, which random draws achieve unless n - b is tiny."""
        free = len(self.extra)
        chosen: list[int] = []
        for _ in range(100 * repeats):
            if len(chosen) == repeats:
                break
            beta = int(rng.integers(0, 1 << free)) if free else 0
            if all((beta ^ c).bit_count() >= 3 for c in chosen):
                chosen.append(beta)
        while len(chosen) < repeats:  # too few free bits for distinct cosets: take random ones
            chosen.append(int(rng.integers(0, 1 << free)) if free else 0)
        in_span = _span(self.columns)[rng.integers(0, 1 << self.b, size=repeats)]
        return np.array([int(r) ^ sum(w for i, w in enumerate(self.extra) if beta >> i & 1)
                         for r, beta in zip(in_span.tolist(), chosen)], dtype=np.int64)

    def hash(self, k):
        return sum(_parity(k & c).astype(np.int64) << t for t, c in enumerate(self.columns.tolist()))

    def signs(self, k):
        return 1.0 - 2.0 * _parity(k[:, None] & self.offsets[None, :])

    def decode(self, slot, u):
        """k for each bin (slot) from its values u (nbins, P), taking the bin to be a singleton."""
        u = u.reshape(len(slot), self.repeats, -1)
        corr = np.sum(u[:, :, 1:] * u[:, :, :1], axis=1)  # X² (-1)^⟨k, w_i⟩, summed over the bases
        v = slot.astype(np.int64) | (np.sum((corr < 0).astype(np.int64) << np.arange(self.b, self.n), axis=1)
                                     if self.n > self.b else 0)
        return sum(_parity(v & int(r)).astype(np.int64) << q for q, r in enumerate(self.inverse.tolist()))


def _insert(basis: dict, v: int) -> bool:
    """Add v to a GF(2) basis kept reduced by pivot bit; False if v was already in its span."""
    while v:
        top = v.bit_length() - 1
        if top not in basis:
            basis[top] = v
            return True
        v ^= basis[top]
    return False
