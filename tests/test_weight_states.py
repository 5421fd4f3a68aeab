"""The other weight state of a model on disk, swapped in place (harness/weight_states.py): a real
model's parameters saved and read back bit for bit, tied parameters once, half precision too."""
from __future__ import annotations

import torch

from lm_eval_genbound.complexity.quantize import quantize_model
from lm_eval_genbound.harness.weight_states import WeightStates


def _model(dtype=torch.float32) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=2, tie_word_embeddings=True)
    return GPT2LMHeadModel(cfg).to(dtype).eval()


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n].view(torch.uint8), b[n].view(torch.uint8)) for n in a)


def test_states_swap_in_place_and_restore_every_parameter_bit_for_bit(tmp_path):
    model = _model()
    original = _snapshot(model)
    storage = {n: p.data_ptr() for n, p in model.named_parameters()}
    states = WeightStates(tmp_path / "states")
    states.save("original", model)
    quantize_model(model, method="rtn", bits=4, in_place=True)
    quantized = _snapshot(model)
    assert not _bit_equal(original, quantized)
    states.save("quantized", model)
    with states.swapped(model, "original", back="quantized"):
        assert _bit_equal(_snapshot(model), original)
    assert _bit_equal(_snapshot(model), quantized)
    # read into the same tensors (no second copy of the weights), the tied head still tied
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == storage
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    # one file per distinct parameter, each the parameter's raw bytes
    files = sorted((tmp_path / "states" / "original").iterdir())
    params = list(model.parameters())
    assert len(files) == len(params) and [f.stat().st_size for f in files] == [
        p.numel() * p.element_size() for p in params]


def test_half_precision_states_round_trip(tmp_path):
    model = _model(torch.bfloat16)
    before = _snapshot(model)
    states = WeightStates(tmp_path)
    states.save("a", model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1)
    states.save("b", model)
    states.load("a", model)
    assert _bit_equal(_snapshot(model), before)
