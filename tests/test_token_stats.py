"""The statistics kernel equals a float64 reference (lm_eval_genbound/harness/token_stats.py).

Every test of the compiled kernel runs it through :func:`_stats`, which fails when the compiled
kernel did not actually run (compilation fell back to eager), or skips, saying why, when no C++
compiler exists for torch.compile to use.
"""
import logging
import os
import shutil

import numpy as np
import pytest
import torch

import lm_eval_genbound.harness.token_stats as ts
from lm_eval_genbound.bound.stats import DEFAULT_ALPHAS
from lm_eval_genbound.harness.token_stats import compute_token_statistics, token_statistics

ALPHAS = list(DEFAULT_ALPHAS)


def _stats(z, t, alphas, kernel, **kw):
    """(logp, entropies) computed by exactly ``kernel``: fail (or skip without a compiler) otherwise."""
    st = compute_token_statistics(z, t, alphas, kernel=kernel, **kw)
    if st.kernel != kernel:
        cxx = os.environ.get("CXX", "g++")
        if kernel == "compiled" and not (shutil.which(cxx) or shutil.which("c++")):
            pytest.skip(f"the compiled kernel cannot be built: no C++ compiler ({cxx} or c++) on PATH "
                        f"({ts.compile_error()})")
        pytest.fail(f"asked for the {kernel} kernel but the {st.kernel} kernel ran "
                    f"(torch.compile failed: {ts.compile_error()})")
    return st.logp, st.entropies


def _reference(logits: torch.Tensor, targets: torch.Tensor, alphas):
    lp = torch.log_softmax(logits.double(), -1)
    p = lp.exp()
    V = logits.shape[-1]
    ent = torch.stack([-(((1 - a) * p + a / V) * ((1 - a) * p + a / V).log()).sum(-1) for a in alphas], -1)
    return lp.gather(-1, targets[:, None]).squeeze(-1), ent


def _logits(V: int, n: int = 600, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, V, generator=g) * 3
    z[:50] *= 40                                   # very peaked
    z[50:100] *= 1e-3                              # very flat
    z[100:150, : V // 2] = -float("inf")           # masked vocabulary entries
    z[150:160] += 1e4                              # huge offsets (log-sum-exp stability)
    return z


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
@pytest.mark.parametrize("V", [256, 4099, 50304])
def test_kernel_matches_float64_reference_on_extreme_logits(V, kernel):
    z = _logits(V, n=600 if V < 10_000 else 200)
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(V // 2, V, (z.shape[0],), generator=g)     # never a masked entry
    logp, ent = _stats(z, targets, ALPHAS, kernel)
    ref_lp, ref_ent = _reference(z, targets, ALPHAS)
    assert logp.dtype == torch.float32 and ent.shape == (z.shape[0], len(ALPHAS))
    assert torch.isfinite(ent).all() and torch.isfinite(logp).all()
    # float32 output: |ln p| can reach hundreds on peaked rows, so allow one float32 ulp on top
    np.testing.assert_allclose(logp.double(), ref_lp, atol=1e-5, rtol=2.4e-7)
    np.testing.assert_allclose(ent.double(), ref_ent, atol=1e-5, rtol=0)
    # the smoothed entropy lies between the point-mass value and ln V
    assert (ent <= np.log(V) + 1e-5).all()


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
def test_chunking_and_shapes_do_not_change_results(kernel):
    z = _logits(300, n=257).reshape(1, 257, 300)
    t = torch.randint(0, 300, (1, 257))
    a = _stats(z, t, ALPHAS, kernel, chunk_tokens=1 << 16)
    b = _stats(z, t, ALPHAS, kernel, chunk_tokens=7)
    assert a[0].shape == (1, 257) and a[1].shape == (1, 257, len(ALPHAS))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel", ["eager", "compiled"])
def test_bfloat16_logits_are_scored_in_float32(kernel):
    z = _logits(512, n=128)
    t = torch.randint(0, 512, (128,))
    lp, ent = _stats(z.bfloat16(), t, ALPHAS, kernel)
    ref_lp, ref_ent = _reference(z.bfloat16().float(), t, ALPHAS)
    assert lp.dtype == torch.float32
    np.testing.assert_allclose(ent.double(), ref_ent, atol=1e-5, rtol=0)


def test_compiled_and_eager_kernels_agree_on_model_like_logits():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3000, 256, generator=g) * 4 - torch.linspace(0, 30, 256)     # peaked, long tail
    t = torch.randint(0, 256, (3000,), generator=g)
    a = _stats(z, t, ALPHAS, "eager")
    b = _stats(z, t, ALPHAS, "compiled")
    torch.testing.assert_close(a[0], b[0], rtol=2.4e-7, atol=2e-6)     # one float32 ulp of |ln p|
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=2e-6)


def test_unknown_kernel_is_an_error():
    with pytest.raises(ValueError, match="stats kernel"):
        token_statistics(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ALPHAS, kernel="triton")


def test_failed_compile_is_reported_and_fails_the_compiled_path_tests(monkeypatch, caplog):
    """A compile failure falls back to eager with a warning, says so, and is not a silent pass."""
    def broken_compile(*args, **kwargs):
        raise RuntimeError("simulated: no working compiler backend")

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(ts, "_compiled_fn", None)           # forget a kernel compiled earlier
    monkeypatch.setattr(ts, "_compile_error", None)
    z = _logits(256, n=64)
    t = torch.randint(0, 256, (64,))
    with caplog.at_level(logging.WARNING, logger=ts.__name__):
        st = compute_token_statistics(z, t, ALPHAS, kernel="compiled")
    assert st.kernel == "eager"
    assert "simulated: no working compiler backend" in ts.compile_error()
    assert "torch.compile of the statistics kernel failed" in caplog.text
    eager = token_statistics(z, t, ALPHAS, kernel="eager")
    torch.testing.assert_close(st.logp, eager[0], rtol=0, atol=0)    # the user still gets numbers
    # the helper every compiled-path test goes through refuses to pass on the eager fallback
    with pytest.raises(pytest.fail.Exception, match="the eager kernel ran"):
        _stats(z, t, ALPHAS, "compiled")
