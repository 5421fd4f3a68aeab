"""Relative entropy coding (REC) of tokens: a bounded Poisson functional representation (numpy + constriction).

    >>> import numpy as np
    >>> from lm_eval_genbound.complexity.rec import rec_keys, pfr_encode, pfr_decode, RecEncoder, RecDecoder
    >>> rng = np.random.default_rng(0)
    >>> p = rng.dirichlet(np.ones(256), size=4)           # the receiver's prior (student), rows of V = 256
    >>> q = rng.dirichlet(np.ones(256), size=4)           # the sender's target (teacher)
    >>> keys = rec_keys(seed=7, step=0, rows=np.arange(4), position=1)
    >>> choice = pfr_encode(p, q, keys)                   # one exact sample of each q row, and its index
    >>> bool((pfr_decode(p, keys, choice.index) == choice.token).all())   # the receiver needs p, keys, index
    True
    >>> enc = RecEncoder(); bits = enc.encode_position(choice.index, choice.token, p)
    >>> dec = RecDecoder(enc.words()); index, escaped = dec.decode_position(p)
    >>> bool((index == choice.index).all())
    True

Scheme (``REC_SCHEME``). Sender and receiver share a prior p (the student's predictive distribution,
float64 rows over V symbols) and counter-based pseudo-randomness keyed by (seed, step, sequence,
position): :func:`rec_keys` derives a 64-bit key per coded token and :func:`counter_uniforms` maps
(key, stream, counter) to a uniform in (0, 1) with the SplitMix64 finaliser — no global generator
state, random access to any candidate. Candidate i (1-based) is U_i = F_p⁻¹(u_i) (stream 0), with
arrival time T_i = E_1 + … + E_i, E_j = −ln u'_j (stream 1). The sender knows the target q and picks
i* = argmin_i T_i · p(U_i)/q(U_i) (Li & El Gamal 2018, Poisson functional representation): U_{i*} is an
exact sample of q. The receiver computes U_{i*} from p and u_{i*} alone (O(1) work).

Search (the encoder's cost). Candidates are scanned in blocks of 32, 64, 128, … (doubling); the
search stops at the end of the first block with T_last ≥ best · r_max, r_max = max_x q(x)/p(x): every
later candidate then has a larger value, so the minimum found is the exact argmin. The values
T_i·p/q form a unit-rate Poisson process, so the final minimum is Exp(1) (mean 1) and the search
ends once T ≈ r_max·best: expected candidates ≤ about 2·(r_max + 32) (the doubling at most doubles
the overshoot). Worst case: ``n_max`` candidates (default 2¹⁶, a header field). If the argmin is not
proven within ``n_max`` candidates (r_max·best > T_{n_max}: only when the student gives a likely
teacher token a probability thousands of times too small) the token is *escaped*: it is drawn from q
exactly by the Gumbel-max trick on stream 2, and coded directly under p (its information content
−log2 p(x) bits, plus the escape symbol). The message stays exact and decodable; the law of the
transmitted tokens differs from q by at most P(escape) in total variation (the escape count is
reported).

Index code. i* ∈ [1, n_max] is written as its bucket b = ⌊log2 i*⌋ (an adaptive categorical over
log2(n_max) + 2 symbols, the last one the escape; integer counts start at 1 and are halved when
their total exceeds 2¹³, updated after each position's rows) followed by the offset i* − 2^b, uniform
over 2^b values; an escaped token follows as a categorical under p. Everything goes, in decoding
order (per position: its buckets, offsets, escaped tokens), into one ``constriction`` range coder
(whole 32-bit words). This is a prefix-free code of the index sequence whose cost adapts to how
often i* = 1 (bucket 0, well under 1 bit when the student already agrees with the teacher), unlike
a fixed universal code (Elias δ spends at least 1 bit per token).

Chunks (``REC_CHUNK_SCHEME``, opt-in). One-shot exact sampling per token pays about h(TV) bits per token
however small KL is; coding c consecutive tokens as one instance pays the log term once per chunk.
Candidate j ∈ [1, N] of a chunk is sampled autoregressively from the prior, its symbol at offset o being
F_p⁻¹ of uniform o of stream 3 under its own key :func:`chunk_candidate_keys` (chunk key, j); arrival
times T_j are the cumulative sums of −ln u of stream 4 under the chunk key (:func:`chunk_arrivals`).
With weights w_j = Π q/p along candidate j the sender picks j* = argmin_{j ≤ N} T_j / w_j
(:func:`truncated_pfr_select`): a *truncated* Poisson functional representation, an approximate sample
of the target's chunk law (exact as N → ∞; :class:`ChunkChoice` carries the effective sample size and
the largest weight share that say how far from it). Validity of the code does not need exact samples,
only that both sides regenerate the same candidate. j* goes into the same range coder as a bucket
⌊log2 j*⌋ under its own adaptive categorical plus the uniform offset (:meth:`RecEncoder.encode_chunk`);
the chunk length is one uniform symbol over the ladder (:meth:`RecEncoder.encode_uniform`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lm_eval_genbound.complexity.symbol_coding import WORD_BITS, load_constriction
from lm_eval_genbound.errors import GenboundError

__all__ = [
    "REC_SCHEME", "DEFAULT_N_MAX", "BLOCK", "mix64", "rec_keys", "counter_uniforms", "candidate_symbols",
    "RecChoice", "pfr_encode", "pfr_decode", "escape_sample", "kl_bits", "RecEncoder", "RecDecoder",
    "validate_n_max", "REC_CHUNK_SCHEME", "CHUNK_LADDER", "DEFAULT_CHUNK_CANDIDATES", "chunk_candidate_keys",
    "chunk_arrivals", "inverse_cdf_rows", "ChunkChoice", "truncated_pfr_select", "chunk_ladder",
    "LI_EL_GAMAL_CONSTANT_BITS", "instance_overhead_bits", "rec_cost_ratios", "CHUNKING_MODES", "DEFAULT_CHUNK_TARGET_BITS",
]

REC_SCHEME = "pfr-bounded-v1"
DEFAULT_N_MAX = 2 ** 16
BLOCK = 32
_COUNT_LIMIT = 2 ** 13
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_STREAM_SALT = np.uint64(0xD1B54A32D192ED03)
_CHUNK_SALT = np.uint64(0x8CB92BA72F3D8DD7)
REC_CHUNK_SCHEME = "pfr-chunked-v1"
CHUNK_LADDER = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_CHUNK_CANDIDATES = 2 ** 10
CHUNKING_MODES = ("off", "adaptive")   # requential's byte scheme, or chunks of adaptive length
DEFAULT_CHUNK_TARGET_BITS = 4.0        # the chunk KL the requential encoder aims a chunk length at, bits
CHUNK_SYMBOL_STREAM = 3
CHUNK_ARRIVAL_STREAM = 4
LI_EL_GAMAL_CONSTANT_BITS = 4.0   # E[bits] ≤ D + log2(D + 1) + 4 per exact PFR instance (Li & El Gamal 2018)


def validate_n_max(n_max: int) -> int:
    """``n_max`` as an int: a power of two in [2, 2²⁴] (GenboundError otherwise)."""
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 2 or n_max > 2 ** 24 \
            or int(n_max) & (int(n_max) - 1):
        raise GenboundError(f"n_max must be a power of two between 2 and 2**24; got {n_max!r}")
    return int(n_max)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of uint64 values (elementwise, wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def rec_keys(seed: int, step: int, rows: np.ndarray, position: int) -> np.ndarray:
    """64-bit keys, uint64 ``[len(rows)]``, of the tokens (seed, step, sequence ``rows``, position)."""
    k = mix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF))
    k = mix64(k ^ np.uint64(int(step)))
    k = mix64(k ^ np.uint64(int(position)))
    return mix64(k ^ np.asarray(rows, dtype=np.uint64))


def counter_uniforms(keys: np.ndarray, stream: int, start: int, count: int) -> np.ndarray:
    """Uniforms in (0, 1), float64 ``[len(keys), count]``: counters start … start+count−1 of ``stream``."""
    ctr = np.arange(start, start + count, dtype=np.uint64)
    base = mix64(np.asarray(keys, dtype=np.uint64) ^ mix64(np.uint64(stream) ^ _STREAM_SALT))
    h = mix64(base[:, None] ^ mix64(ctr)[None, :])
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def candidate_symbols(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """F_p⁻¹(u): symbols int64 ``[n, m]`` of uniforms ``u [n, m]`` under the rows of ``p [n, V]``."""
    cdf = np.cumsum(p, axis=1)
    out = np.empty(u.shape, dtype=np.int64)
    last = p.shape[1] - 1
    for r in range(p.shape[0]):
        out[r] = np.minimum(np.searchsorted(cdf[r], u[r] * cdf[r, -1], side="right"), last)
    return out


def inverse_cdf_rows(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """F_p⁻¹(u): one symbol per row, int64 ``[n]``, of uniforms ``u [n]`` under the rows of ``p [n, V]``.

    The same values as :func:`candidate_symbols` with one uniform per row, vectorised; every row is
    computed alone (row-wise cumulative sum), so a row's symbol does not depend on the other rows.
    """
    cdf = np.cumsum(p, axis=1)
    return np.minimum((cdf <= (u * cdf[:, -1])[:, None]).sum(axis=1), p.shape[1] - 1).astype(np.int64)


def chunk_candidate_keys(chunk_keys: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """uint64 keys of candidates ``candidate`` (1-based, int ``[n]``) of the chunks keyed ``chunk_keys [n]``."""
    c = mix64(np.asarray(candidate, dtype=np.uint64) ^ _CHUNK_SALT)
    return mix64(np.asarray(chunk_keys, dtype=np.uint64) ^ c)


def chunk_arrivals(chunk_keys: np.ndarray, n: int) -> np.ndarray:
    """Arrival times T_1 < … < T_n, float64 ``[len(chunk_keys), n]``: a unit-rate Poisson process per chunk."""
    return np.cumsum(-np.log(counter_uniforms(chunk_keys, CHUNK_ARRIVAL_STREAM, 0, n)), axis=1)


def chunk_ladder(max_len: int, ladder: tuple = CHUNK_LADDER) -> tuple[int, ...]:
    """The chunk lengths usable in sequences of ``max_len`` coded tokens: ladder entries capped at ``max_len``."""
    return tuple(sorted({min(int(c), int(max_len)) for c in ladder}))


@dataclass(frozen=True)
class ChunkChoice:
    """The truncated PFR choice of each chunk (:func:`truncated_pfr_select`).

    Attributes
    ----------
    index : int64 ``[n]``
        j* ∈ [1, N] (1-based).
    ess : float64 ``[n]``
        Effective sample size of the weights, (Σ w)² / Σ w² ∈ [1, N]: near 1 means the N candidates hold
        one plausible chunk and the choice is far from an exact sample of the target.
    max_share : float64 ``[n]``
        max_j w_j / Σ w_j: the largest candidate's share of the self-normalised target mass.
    log2_weight : float64 ``[n]``
        log2 w_{j*} = Σ log2 q/p along the chosen candidate, bits.
    """

    index: np.ndarray
    ess: np.ndarray
    max_share: np.ndarray
    log2_weight: np.ndarray


def truncated_pfr_select(log_w: np.ndarray, chunk_keys: np.ndarray) -> ChunkChoice:
    """j* = argmin_{j ≤ N} T_j / w_j per row (module docstring, chunks).

    Parameters
    ----------
    log_w : float64 ``[n, N]``
        ln w_j = Σ (ln q − ln p) along candidate j of each chunk, nats.
    chunk_keys : uint64 ``[n]``
        The chunks' keys (the arrival times are drawn from them).

    Returns
    -------
    ChunkChoice
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    t = chunk_arrivals(chunk_keys, log_w.shape[1])
    j = np.argmin(np.log(t) - log_w, axis=1)
    z = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    tot = z.sum(axis=1)
    return ChunkChoice(index=(j + 1).astype(np.int64), ess=tot ** 2 / (z ** 2).sum(axis=1), max_share=1.0 / tot,
                       log2_weight=log_w[np.arange(log_w.shape[0]), j] / np.log(2.0))


@dataclass(frozen=True)
class RecChoice:
    """What the encoder chose for each row.

    Attributes
    ----------
    index : int64 ``[n]``
        i* (1-based candidate index), 0 for an escaped token.
    token : int64 ``[n]``
        The transmitted token (an exact sample of q unless escaped; then drawn from q by Gumbel-max).
    candidates : int64 ``[n]``
        Candidates the search examined (≤ n_max rounded up to the block schedule).
    r_max : float64 ``[n]``
        max_x q(x)/p(x) of the row (what drives the search cost).
    """

    index: np.ndarray
    token: np.ndarray
    candidates: np.ndarray
    r_max: np.ndarray

    @property
    def escaped(self) -> np.ndarray:
        return self.index == 0


def escape_sample(q: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Tokens int64 ``[n]`` drawn exactly from the rows of ``q`` (Gumbel-max on stream 2)."""
    g = -np.log(-np.log(counter_uniforms(keys, 2, 0, q.shape[1])))
    with np.errstate(divide="ignore"):
        return np.argmax(np.log(q) + g, axis=1).astype(np.int64)


def pfr_encode(p: np.ndarray, q: np.ndarray, keys: np.ndarray, n_max: int = DEFAULT_N_MAX) -> RecChoice:
    """Bounded Poisson-functional-representation search (module docstring).

    Parameters
    ----------
    p : float64 ``[n, V]``
        The prior rows (receiver's distribution), positive.
    q : float64 ``[n, V]``
        The target rows (sender's distribution), non-negative, summing to 1.
    keys : uint64 ``[n]``
        Shared-randomness keys (:func:`rec_keys`).
    n_max : int
        Most candidates examined per row (a power of two).

    Returns
    -------
    RecChoice
    """
    n = p.shape[0]
    pn = p / p.sum(axis=1, keepdims=True)
    ratio = q / pn
    r_max = ratio.max(axis=1)
    best = np.full(n, np.inf)
    best_i = np.zeros(n, dtype=np.int64)
    best_x = np.zeros(n, dtype=np.int64)
    t_carry = np.zeros(n)
    searched = np.zeros(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    start, size = 0, BLOCK
    while active.any() and start < n_max:
        m = min(size, n_max - start)
        rows = np.flatnonzero(active)
        cand = candidate_symbols(pn[rows], counter_uniforms(keys[rows], 0, start, m))
        t = t_carry[rows, None] + np.cumsum(-np.log(counter_uniforms(keys[rows], 1, start, m)), axis=1)
        with np.errstate(divide="ignore"):
            val = t / np.take_along_axis(ratio[rows], cand, axis=1)
        j = np.argmin(val, axis=1)
        v = val[np.arange(rows.size), j]
        better = v < best[rows]
        best[rows[better]] = v[better]
        best_i[rows[better]] = start + j[better] + 1
        best_x[rows[better]] = cand[better, j[better]]
        t_carry[rows] = t[:, -1]
        searched[rows] += m
        done = t[:, -1] >= best[rows] * r_max[rows]
        active[rows[done]] = False
        start += m
        size *= 2
    index = np.where(active, 0, best_i)
    token = best_x.copy()
    if active.any():
        esc = np.flatnonzero(active)
        token[esc] = escape_sample(q[esc], keys[esc])
    return RecChoice(index=index, token=token, candidates=searched, r_max=r_max)


def pfr_decode(p: np.ndarray, keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The receiver's tokens int64 ``[n]``: U_{i*} from the prior rows ``p``, ``keys`` and ``index`` (−1 where escaped)."""
    index = np.asarray(index, dtype=np.int64)
    out = np.full(index.shape, -1, dtype=np.int64)
    for r in np.flatnonzero(index > 0):
        pn = p[r:r + 1] / p[r].sum()
        u = counter_uniforms(keys[r:r + 1], 0, int(index[r]) - 1, 1)
        out[r] = candidate_symbols(pn, u)[0, 0]
    return out


def kl_bits(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """KL(q‖p) of each row, bits, float64 ``[n]`` (terms with q = 0 count 0)."""
    pn = p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * (np.log2(q) - np.log2(pn)), 0.0)
    return terms.sum(axis=1)


def instance_overhead_bits(instance_kl_bits: np.ndarray) -> float:
    """Σ_i log2(1 + D_i), bits: the leading overhead term of REC instances with KL D_i bits (no constant).

    One exact PFR instance with KL(q‖p) = D bits costs in expectation at most D + log2(D + 1) + 4 bits
    with a suitable prefix code for its index (Li & El Gamal 2018, strong functional representation
    lemma; ``LI_EL_GAMAL_CONSTANT_BITS``). The term is concave in D, so it must be summed over the
    instances themselves: n·log2(1 + ΣD/n) from a mean would overstate it (Jensen). Negative D (float
    rounding of a zero KL) counts 0.

    Parameters
    ----------
    instance_kl_bits : float64 ``[n]``
        D_i of every instance, bits.

    Returns
    -------
    float
        Σ log2(1 + max(D_i, 0)), bits.
    """
    d = np.maximum(np.asarray(instance_kl_bits, dtype=np.float64), 0.0)
    return float(np.log1p(d).sum() / np.log(2.0))


def rec_cost_ratios(rec_bits: float, kl_bits: float, overhead_bits: float,
                    instances: int) -> tuple[float | None, float | None]:
    """Realized REC bits against the scheme's expected cost: ``(rec / (ΣKL + Σlog2(1+D_i)),
    rec / (ΣKL + Σ[log2(1+D_i) + LI_EL_GAMAL_CONSTANT_BITS]))``, None where a denominator is 0.

    Parameters
    ----------
    rec_bits, kl_bits, overhead_bits : float
        Realized bits, Σ KL bits and :func:`instance_overhead_bits` over the same instances.
    instances : int
        How many REC instances those are.

    Examples
    --------
    >>> rec_cost_ratios(12.0, 4.0, 2.0, 1)
    (2.0, 1.2)
    """
    lo = kl_bits + overhead_bits
    hi = lo + LI_EL_GAMAL_CONSTANT_BITS * instances
    return (rec_bits / lo if lo > 0 else None, rec_bits / hi if hi > 0 else None)


class _BucketModel:
    """Adaptive counts over the buckets ⌊log2 i*⌋ = 0 … log2(n_max) and the escape symbol."""

    def __init__(self, n_max: int):
        self.n_max = validate_n_max(n_max)
        self.escape = int(np.log2(self.n_max)) + 1
        self.counts = np.ones(self.escape + 1, dtype=np.int64)

    def probs(self) -> np.ndarray:
        return self.counts / self.counts.sum()

    def update(self, symbols: np.ndarray) -> None:
        np.add.at(self.counts, symbols, 1)
        while self.counts.sum() > _COUNT_LIMIT:
            self.counts = (self.counts + 1) // 2


def _split(index: np.ndarray, escape: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket symbols, offsets) of 1-based indices; escape (index 0) → the escape symbol."""
    b = np.array([int(i).bit_length() - 1 if i > 0 else escape for i in index], dtype=np.int64)
    off = np.where(index > 0, index - (np.int64(1) << np.minimum(b, 62)), 0)
    return b, off


def _encode_buckets(c, enc, model: _BucketModel, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append the buckets, then the offsets, of 1-based ``index`` (0 = escape); update ``model``.

    Returns (information content, bits float64 ``[n]``; bucket symbols int64 ``[n]``).
    """
    b, off = _split(index, model.escape)
    probs = model.probs()
    enc.encode(b.astype(np.int32), c.stream.model.Categorical(probs, perfect=False))
    bits = -np.log2(probs[b])
    has_off = (b > 0) & (b < model.escape)
    if has_off.any():
        enc.encode(off[has_off].astype(np.int32), c.stream.model.Uniform(), (np.int32(1) << b[has_off].astype(np.int32)))
        bits = bits + np.where(has_off, np.minimum(b, model.escape), 0)
    model.update(b)
    return bits, b


def _decode_buckets(c, dec, model: _BucketModel, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Read what :func:`_encode_buckets` wrote: (index int64 ``[n]``, 0 = escape; bucket symbols ``[n]``)."""
    b = np.asarray(dec.decode(c.stream.model.Categorical(model.probs(), perfect=False), n), dtype=np.int64)
    index = np.zeros(n, dtype=np.int64)
    has_off = (b > 0) & (b < model.escape)
    index[b == 0] = 1
    if has_off.any():
        off = np.asarray(dec.decode(c.stream.model.Uniform(), (np.int32(1) << b[has_off].astype(np.int32))),
                         dtype=np.int64)
        index[has_off] = (np.int64(1) << b[has_off]) + off
    model.update(b)
    return index, b


class RecEncoder:
    """The index stream of a requential message: buckets, offsets and escaped tokens, one range coder.

    ``chunk_candidates`` (N, a power of two) enables :meth:`encode_chunk` (its own bucket model).
    """

    def __init__(self, n_max: int = DEFAULT_N_MAX, chunk_candidates: int | None = None):
        c = load_constriction()
        self._c = c
        self._enc = c.stream.queue.RangeEncoder()
        self._model = _BucketModel(n_max)
        self._chunk_model = _BucketModel(chunk_candidates) if chunk_candidates is not None else None

    def encode_position(self, index: np.ndarray, token: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Append one position's rows; returns their information content, bits float64 ``[n]``.

        ``index`` (0 = escape) and ``token`` as in :class:`RecChoice`; ``p`` the prior rows (escaped
        tokens are coded under them).
        """
        c, model = self._c, self._model
        bits, b = _encode_buckets(c, self._enc, model, np.asarray(index, dtype=np.int64))
        esc = b == model.escape
        if esc.any():
            rows = p[esc] / p[esc].sum(axis=1, keepdims=True)
            self._enc.encode(np.asarray(token, dtype=np.int64)[esc].astype(np.int32),
                             c.stream.model.Categorical(perfect=False), rows)
            bits[esc] += -np.log2(rows[np.arange(rows.shape[0]), np.asarray(token)[esc]])
        return bits

    def encode_chunk(self, index: np.ndarray) -> np.ndarray:
        """Append chunk indices j* ∈ [1, N] (int ``[n]``); returns their information content, bits ``[n]``."""
        return _encode_buckets(self._c, self._enc, self._chunk_model, np.asarray(index, dtype=np.int64))[0]

    def encode_uniform(self, symbol: int, size: int) -> float:
        """Append one symbol uniform over ``size`` values; returns its bits, log2(size)."""
        self._enc.encode(np.array([symbol], dtype=np.int32), self._c.stream.model.Uniform(int(size)))
        return float(np.log2(size))

    def words(self) -> np.ndarray:
        """The message so far (sealed copy, uint32 words; encoding may continue)."""
        return np.asarray(self._enc.get_compressed(), dtype=np.uint32).copy()

    def n_bits(self) -> int:
        """Bits of :meth:`words` (whole 32-bit words)."""
        return int(self.words().size) * WORD_BITS


class RecDecoder:
    """Reads what :class:`RecEncoder` wrote, position by position (or chunk by chunk)."""

    def __init__(self, words: np.ndarray, n_max: int = DEFAULT_N_MAX, chunk_candidates: int | None = None):
        c = load_constriction()
        self._c = c
        self._dec = c.stream.queue.RangeDecoder(np.asarray(words, dtype=np.uint32))
        self._model = _BucketModel(n_max)
        self._chunk_model = _BucketModel(chunk_candidates) if chunk_candidates is not None else None

    def decode_position(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index int64 ``[n]`` with 0 = escape, escaped tokens int64 ``[n]`` with −1 elsewhere) of one position."""
        c, model = self._c, self._model
        n = p.shape[0]
        index, b = _decode_buckets(c, self._dec, model, n)
        token = np.full(n, -1, dtype=np.int64)
        esc = b == model.escape
        if esc.any():
            rows = p[esc] / p[esc].sum(axis=1, keepdims=True)
            token[esc] = np.asarray(self._dec.decode(c.stream.model.Categorical(perfect=False), rows), dtype=np.int64)
        return index, token

    def decode_chunk(self, n: int) -> np.ndarray:
        """``n`` chunk indices j* (int64 ``[n]``) written by :meth:`RecEncoder.encode_chunk`."""
        return _decode_buckets(self._c, self._dec, self._chunk_model, n)[0]

    def decode_uniform(self, size: int) -> int:
        """One symbol written by :meth:`RecEncoder.encode_uniform`."""
        return int(self._dec.decode(self._c.stream.model.Uniform(int(size)), 1)[0])
