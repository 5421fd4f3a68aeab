"""Hessian spectra: Lanczos with full reorthogonalisation, SLQ traces against exact eigenvalues
(tr √|H| of a whole-model loss Hessian within 5%), Hessian-vector products against finite
differences, per-layer proxy Hessians E[x xᵀ], and the ``genbound hessian`` command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.complexity.hessian import layer_spectrum, loss_hessian_operator, proxy_hessians
from lm_eval_genbound.complexity.slq import MatrixOperator, dense_matrix, lanczos, slq, sqrt_abs


@pytest.fixture(scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _power_law_psd(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = 1.0 / np.arange(1, n + 1) ** 1.5
    return (Q * torch.from_numpy(ev)) @ Q.T, ev


# ------------------------------------------------------------------------------------------------
# Lanczos / SLQ on explicit matrices
# ------------------------------------------------------------------------------------------------
def test_full_lanczos_recovers_all_eigenvalues():
    A, ev = _power_law_psd(40)
    alphas, betas, lengths = lanczos(MatrixOperator(A), torch.ones(2, 40, dtype=torch.float64), 40)
    for i in range(2):
        k = int(lengths[i])
        T = np.diag(alphas[i, :k]) + np.diag(betas[i, :k - 1], 1) + np.diag(betas[i, :k - 1], -1)
        ritz = np.sort(np.linalg.eigvalsh(T))
        assert k == 40
        assert np.allclose(ritz, np.sort(ev), rtol=1e-8, atol=1e-12)


def test_lanczos_stops_at_an_invariant_subspace():
    A = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 5.0], dtype=torch.float64))  # 3 distinct eigenvalues
    alphas, betas, lengths = lanczos(MatrixOperator(A), torch.ones(1, 5, dtype=torch.float64), 5)
    assert lengths[0] == 3
    T = np.diag(alphas[0, :3]) + np.diag(betas[0, :2], 1) + np.diag(betas[0, :2], -1)
    assert np.allclose(np.sort(np.linalg.eigvalsh(T)), [1.0, 2.0, 5.0])


def test_slq_is_exact_for_diagonal_matrix_with_full_steps():
    """Rademacher Hutchinson is exact on a diagonal matrix, and m = n quadrature is exact."""
    d = torch.linspace(-3.0, 7.0, 50, dtype=torch.float64)
    res = slq(torch.diag(d), n_probes=3, n_steps=50, seed=5)
    assert math.isclose(res.tr_sqrt_abs, float(d.abs().sqrt().sum()), rel_tol=1e-8)
    assert math.isclose(res.trace(), float(d.sum()), rel_tol=1e-8, abs_tol=1e-8)
    grid, rho = res.density(n_grid=4000)
    assert abs(np.trapezoid(rho, grid) - 1.0) < 1e-3


def test_slq_tr_sqrt_of_psd_matrix_and_stderr():
    A, ev = _power_law_psd(300, seed=1)
    exact = float(np.sqrt(ev).sum())
    res = slq(A, n_probes=20, n_steps=40, seed=0)
    # the quadrature has converged at 40 steps (more steps change nothing) ...
    assert math.isclose(slq(A, n_probes=20, n_steps=80, seed=0).tr_sqrt_abs, res.tr_sqrt_abs, rel_tol=1e-6)
    # ... so the error is Hutchinson noise, which the reported standard error covers
    se = res.trace_stderr(sqrt_abs)
    assert 0 < se < 0.05 * exact
    assert abs(res.tr_sqrt_abs - exact) < 3 * se, (res.tr_sqrt_abs, exact, se)
    assert abs(res.tr_sqrt_abs / exact - 1) < 0.1
    # a matvec function gives the same answer as the matrix
    res_f = slq(lambda v: A @ v, dim=300, n_probes=20, n_steps=40, seed=0)
    assert math.isclose(res_f.tr_sqrt_abs, res.tr_sqrt_abs, rel_tol=1e-9)
    assert json.loads(json.dumps(res.to_dict()))["n_probes"] == 20


def test_slq_rejects_bad_settings():
    with pytest.raises(GenboundError):
        slq(torch.eye(3), n_probes=0)
    with pytest.raises(GenboundError):
        slq(lambda v: v)  # a function needs dim
    with pytest.raises(GenboundError):
        MatrixOperator(torch.zeros(2, 3))


# ------------------------------------------------------------------------------------------------
# whole-model loss Hessian (≤ 5k parameters, exact reference)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(one_thread):
    """A 1,144-parameter GPT-NeoX, briefly trained on noisy cyclic sequences, and a token batch."""
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    model = GPTNeoXForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    base = torch.arange(1, 17) % 16
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        ids = (base[None, :] + torch.randint(0, 16, (8, 1), generator=g)) % 16
        noise = torch.rand(ids.shape, generator=g) < 0.2
        ids = torch.where(noise, torch.randint(0, 16, ids.shape, generator=g), ids)
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    batch = (base[None, :] + torch.arange(8)[:, None]) % 16
    return model, batch


@pytest.fixture(scope="module")
def exact_hessian(tiny_lm):
    model, batch = tiny_lm
    op = loss_hessian_operator(model, batch)
    H = dense_matrix(op)
    return op, H, torch.linalg.eigvalsh(H).numpy()


def test_hvp_matches_finite_differences_of_the_gradient(tiny_lm):
    import copy

    model, batch = tiny_lm
    m64 = copy.deepcopy(model).double().eval()
    op = loss_hessian_operator(m64, batch)
    g = torch.Generator().manual_seed(3)
    vs = [torch.randn(op.dim, generator=g, dtype=torch.float64) for _ in range(3)]
    hvs = [op.matvec(v) for v in vs]
    # batched products equal single ones
    V = torch.stack(vs)
    assert torch.allclose(op.matmat(V), torch.stack(hvs), rtol=1e-10, atol=1e-12)

    fd_model = copy.deepcopy(m64)  # perturbed copy; the operator's graph stays intact
    fd_model.set_attn_implementation("eager")
    params = list(fd_model.parameters())
    flat0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    assert op.dim == flat0.numel() == 1144

    def grad_at(flat):
        i = 0
        with torch.no_grad():
            for p in params:
                p.copy_(flat[i:i + p.numel()].view_as(p))
                i += p.numel()
        logits = fd_model(batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), batch[:, 1:].reshape(-1))
        return torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(loss, params)])

    eps = 1e-5  # the optimum: eager attention's softmax runs in float32 even in a float64 model
    for v, hv in zip(vs, hvs):
        fd = (grad_at(flat0 + eps * v) - grad_at(flat0 - eps * v)) / (2 * eps)
        assert torch.allclose(hv, fd, rtol=1e-4, atol=2e-5 * float(fd.abs().max())), float((hv - fd).abs().max())


def test_slq_tr_sqrt_abs_of_loss_hessian_within_5_percent(exact_hessian):
    op, H, ev = exact_hessian
    exact = float(np.sqrt(np.abs(ev)).sum())
    assert ev.min() < 0 < ev.max()  # indefinite: f = √|λ| matters
    res = slq(MatrixOperator(H), n_probes=10, n_steps=200, seed=0)
    err = res.tr_sqrt_abs / exact - 1
    print(f"tr sqrt|H|: exact {exact:.4f}, SLQ {res.tr_sqrt_abs:.4f} ({100 * err:+.2f}%), "
          f"stderr {res.trace_stderr(sqrt_abs):.4f}; trace exact {ev.sum():.4f} SLQ {res.trace():.4f}")
    assert abs(err) < 0.05
    assert abs(res.trace() - ev.sum()) < 4 * res.trace_stderr() + 1e-6


def test_slq_through_hvps_equals_slq_on_the_dense_hessian(exact_hessian):
    """Same probes → the Lanczos run on Hessian-vector products gives the same quadrature as on
    the explicit matrix (the operator *is* the Hessian)."""
    op, H, _ = exact_hessian
    a = slq(op, n_probes=3, n_steps=20, seed=7)
    b = slq(MatrixOperator(H), n_probes=3, n_steps=20, seed=7)
    for ta, tb in zip(a.nodes, b.nodes):
        assert np.allclose(ta, tb, rtol=1e-5, atol=1e-6 * np.abs(tb).max())
    assert math.isclose(a.tr_sqrt_abs, b.tr_sqrt_abs, rel_tol=1e-5)


def test_loss_hessian_operator_restores_model_state(tiny_lm):
    model, batch = tiny_lm
    impl = model.config._attn_implementation
    model.train()
    loss_hessian_operator(model, batch)
    assert model.training and model.config._attn_implementation == impl
    model.eval()
    with pytest.raises(GenboundError):
        loss_hessian_operator(model, torch.zeros(2, 1, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# per-layer proxy Hessians
# ------------------------------------------------------------------------------------------------
def test_proxy_hessian_equals_input_second_moment(tiny_lm):
    model, batch = tiny_lm
    Hs = proxy_hessians(model, batch, batch_size=3)
    assert set(Hs) == {"gpt_neox.layers.0.attention.query_key_value", "gpt_neox.layers.0.attention.dense",
                       "gpt_neox.layers.0.mlp.dense_h_to_4h", "gpt_neox.layers.0.mlp.dense_4h_to_h", "lm_head"}
    with torch.no_grad():
        x = model.gpt_neox.layers[0].input_layernorm(model.gpt_neox.embed_in(batch)).reshape(-1, 8).double()
        ref = x.T @ x / x.shape[0]
        h = model.gpt_neox(batch).last_hidden_state.reshape(-1, 8).double()
        ref_head = h.T @ h / h.shape[0]
    assert torch.allclose(Hs["gpt_neox.layers.0.attention.query_key_value"], ref, rtol=1e-5, atol=1e-7)
    assert torch.allclose(Hs["lm_head"], ref_head, rtol=1e-5, atol=1e-7)
    assert Hs["gpt_neox.layers.0.mlp.dense_4h_to_h"].shape == (32, 32)


def test_layer_spectrum_exact_vs_slq():
    A, ev = _power_law_psd(200, seed=3)
    ex = layer_spectrum(A, name="a")
    approx = layer_spectrum(A, name="a", exact_max_dim=0, n_probes=20, n_steps=40)
    assert ex.method == "exact" and approx.method == "slq"
    assert math.isclose(ex.tr_sqrt, float(np.sqrt(ev).sum()), rel_tol=1e-9)
    assert math.isclose(ex.lambda_max, ev[0], rel_tol=1e-9)
    assert abs(approx.tr_sqrt / ex.tr_sqrt - 1) < 0.03
    assert math.isclose(approx.lambda_max, ev[0], rel_tol=1e-6)
    assert 0 < ex.quip_ratio <= 1
    iso = layer_spectrum(torch.eye(10))
    assert math.isclose(iso.quip_ratio, 1.0)


def test_layer_spectra_of_a_model_exact_vs_slq(tiny_lm):
    model, batch = tiny_lm
    for name, H in proxy_hessians(model, batch).items():
        ex = layer_spectrum(H, name=name)
        approx = layer_spectrum(H, name=name, exact_max_dim=0, n_probes=30, n_steps=H.shape[0])
        # with m = d the quadrature is exact; only Hutchinson noise remains
        assert abs(approx.tr_sqrt - ex.tr_sqrt) < 4 * approx.tr_sqrt_stderr + 1e-9 * ex.tr_sqrt, name


# ------------------------------------------------------------------------------------------------
# genbound hessian
# ------------------------------------------------------------------------------------------------
def test_hessian_cli_writes_json_and_png(tmp_path, one_thread, capsys):
    from lm_eval_genbound.cli.complexity import main_hessian

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=256, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    mdir = tmp_path / "m"
    GPTNeoXForCausalLM(cfg).save_pretrained(mdir)  # no tokenizer files: byte tokens
    tokens = tmp_path / "t.txt"
    tokens.write_text("We the People of the United States, in Order to form a more perfect Union. " * 5)
    out = tmp_path / "h"
    rc = main_hessian(["--model", str(mdir), "--out", str(out), "--tokens", str(tokens), "--probes", "2",
                       "--steps", "10", "--n-seq", "2", "--seq-len", "32", "--device", "cpu", "--no-progress"])
    assert rc == 0
    rec = json.loads((out / "hessian.json").read_text())
    assert rec["schema_version"] == 1 and rec["kind"] == "genbound_hessian"
    lh = rec["loss_hessian"]
    assert lh["dim"] == rec["n_params"] and lh["n_probes"] == 2 and lh["tr_sqrt_abs"] > 0
    assert len(lh["density"]["grid"]) == len(lh["density"]["density"])
    assert len(rec["layers"]) == 5 and all(l["method"] == "exact" for l in rec["layers"])
    png = (out / "spectral_density.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.save(tmp_path / "ids.npy", np.arange(100) % 256)
    assert main_hessian(["--model", str(mdir), "--out", str(tmp_path / "h2"), "--tokens", str(tmp_path / "ids.npy"),
                         "--no-loss-hessian", "--n-seq", "2", "--seq-len", "16", "--device", "cpu",
                         "--no-progress"]) == 0
    assert "loss_hessian" not in json.loads((tmp_path / "h2" / "hessian.json").read_text())
    capsys.readouterr()
    assert main_hessian(["--model", str(tmp_path / "missing"), "--out", str(out), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.startswith("error: model directory not found")
