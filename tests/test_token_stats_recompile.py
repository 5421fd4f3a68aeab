"""The compiled statistics kernel compiles once: chunks that are slices of a larger tile, whole
tensors and one-row chunks all reuse the first graph (a recompile in the middle of scoring cost
tens of seconds per occurrence on a 2-core CPU), with the same values."""
import pytest
import torch

from lm_eval_genbound.harness import token_stats
from lm_eval_genbound.harness.token_stats import compute_token_statistics

ALPHAS = [1e-3, 0.01, 0.1, 0.5]


def test_compiled_kernel_does_not_recompile_for_slices_whole_tensors_or_one_row():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 512, generator=g) * 3
    tgt = torch.randint(0, 512, (300,), generator=g)
    first = compute_token_statistics(z[:5], tgt[:5], ALPHAS, kernel="compiled")
    if first.kernel != "compiled":
        pytest.skip(f"torch.compile unavailable here: {token_stats.compile_error()}")
    whole = z.clone()                               # a tensor that is no view at all
    with torch._dynamo.config.patch(error_on_recompile=True):
        runs = {(lo, hi): compute_token_statistics(z[lo:hi], tgt[lo:hi], ALPHAS, kernel="compiled",
                                                   chunk_tokens=64)
                for lo, hi in ((0, 85), (100, 137), (7, 8), (0, 300))}
        runs["whole"] = compute_token_statistics(whole, tgt, ALPHAS, kernel="compiled", chunk_tokens=64)
    assert all(st.kernel == "compiled" for st in runs.values())    # a recompile would have fallen back
    one, chunk = runs[(7, 8)], runs[(0, 85)]
    assert torch.equal(one.logp[0], chunk.logp[7]) and torch.equal(one.entropies[0], chunk.entropies[7])
    eager = compute_token_statistics(z, tgt, ALPHAS, kernel="eager")
    assert torch.allclose(runs["whole"].entropies, eager.entropies, atol=1e-5, rtol=0)
