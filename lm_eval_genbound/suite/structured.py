"""Structured linear layers (Kronecker, Monarch) for suite members: plans, modules, materialisation, code length.

    >>> import torch
    >>> from lm_eval_genbound.suite.structured import KroneckerLinear, MonarchLinear, plan_layer
    >>> plan = plan_layer("kronecker", 16, 64, compression=4.0)     # in 16, out 64
    >>> plan.n_factor_params, plan.compression
    (256, 4.0)
    >>> layer = KroneckerLinear(plan)
    >>> x = torch.randn(3, 16)
    >>> bool(torch.allclose(layer.forward_factored(x), layer(x), atol=1e-6))
    True
    >>> plan_layer("monarch", 16, 64, compression=4.0).to_dict()["in_blocks"]
    2

A structured suite member is the GPT-NeoX model of its shape with the four linear layers of every
block (``attention.query_key_value``, ``attention.dense``, ``mlp.dense_h_to_4h``,
``mlp.dense_4h_to_h``) replaced (:func:`structure_model`) by one of:

* **Kronecker** (:class:`KroneckerLinear`): W = Σ_{k<r} A_k ⊗ B_k with A_k ∈ R^{m1×n1},
  B_k ∈ R^{m2×n2}, out = m1·m2, in = n1·n2 (r = 1: a single Kronecker product W = A ⊗ B).
  Parameters r·(m1·n1 + m2·n2). Stored as ``factor_a`` [r·m1, n1] and ``factor_b`` [r·m2, n2].
* **Monarch** (:class:`MonarchLinear`): W = P_out · blockdiag(L_1..L_q) · P · blockdiag(R_1..R_k):
  the input (n = k·a) is cut into k blocks of a, each mapped to q values by R_i ∈ R^{q×a}; the
  k×q grid is transposed (the permutation P) and each of its q rows of k values is mapped to b
  outputs by L_j ∈ R^{b×k}, out = q·b. Parameters q·n + k·m, rank ≤ min(k·q, n, m). Stored as
  ``factor_r`` [k·q, a] and ``factor_l`` [q·b, k].

Training computes each layer as x Wᵀ with W formed from the factors at every step (``forward``):
at the suite's widths (8–64) this is several times faster on a CPU than the factored product
(``forward_factored``: on neox-16x2 with Kronecker factors it took 2.8× the CPU time of the dense
model, 14.4 vs 5.1 s for its 145 steps), it costs
the dense layer's matmul FLOPs plus forming W, and it is the same function of the factors (the
tests check the two against each other). Gradients and weight decay act on the factors only.

Biases stay dense vectors. The embeddings, the output head and the LayerNorms are untouched.
:func:`plan_layer` picks, for a stated compression factor c (dense weights / factor parameters),
the factorisation whose parameter count is nearest m·n/c in log scale (ties: the larger bound on
the rank of W, then Kronecker the smaller r, then the more balanced factors or blocks); the achieved factor is recorded (:attr:`KroneckerPlan.compression`).

Initialisation: the materialised weight's entries have the dense model's standard deviation
(``initializer_range`` = 0.02): each factor is N(0, s²) with s⁴·r = 0.02² (Kronecker) or
s² = 0.02 (Monarch: every entry of W is one product L·R).

**Materialisation** (:func:`materialize`) returns an ordinary ``GPTNeoXForCausalLM`` whose four
linears hold the dense weights ``dense_weight()`` (float32, a deterministic function of the
factors); the suite saves it as the model's Hugging Face checkpoint, and the factors themselves
(the whole structured state dict) as ``structured.safetensors`` with the plans in
``structure.json``, so :func:`load_structured` rebuilds the structured model.

**Code length** (:func:`structured_quantized`): the structured model is quantized by RTN with a
quantization spec (``rtn4``: 4-bit weights, groups of 64 columns, 6-bit vectors) through
:func:`lm_eval_genbound.complexity.quantize.quantize_model`, whose targets include every factor
(``weight_factors``, :mod:`lm_eval_genbound.complexity.targets`); the code length is the model
message of those tensors only: factors, embeddings, head, biases and LayerNorms — never the dense
materialisation. The evaluated model is the materialisation of the quantized factors. GPTQ does
not apply (the factors are not called as layers, so there are no inputs to calibrate on).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lm_eval_genbound.atomic import atomic_write_text, atomic_write_with
from lm_eval_genbound.errors import GenboundError

__all__ = ["STRUCTURES", "STRUCTURED_LAYERS", "STRUCTURE_JSON", "FACTORS_FILE", "KroneckerPlan", "MonarchPlan",
           "plan_layer", "KroneckerLinear", "MonarchLinear", "structure_model", "structured_layers",
           "materialize", "save_structured", "load_structured", "structured_quantized", "check_structure"]

STRUCTURES = ("dense", "kronecker", "monarch")
#: the linear layers of a GPT-NeoX block that a structured member replaces (module-name suffixes)
STRUCTURED_LAYERS = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
STRUCTURE_JSON = "structure.json"
FACTORS_FILE = "structured.safetensors"
_INIT_STD = 0.02  # GPTNeoXConfig.initializer_range of the suite (spec.neox_config)


def check_structure(structure: str, compression: float) -> tuple[str, float]:
    """Validate a structure name and compression factor (> 1 for a structured class; 1 for dense)."""
    if structure not in STRUCTURES:
        raise GenboundError(f"structure must be one of {', '.join(STRUCTURES)}; got {structure!r}")
    if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not math.isfinite(compression):
        raise GenboundError(f"compression must be a finite number; got {compression!r}")
    if structure == "dense":
        if compression != 1:
            raise GenboundError(f"compression={compression!r} needs a structure (kronecker or monarch)")
    elif compression <= 1:
        raise GenboundError(f"compression must be > 1 for a {structure} structure; got {compression!r}")
    return structure, float(compression)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------
class _Plan:
    """What both plans share: the achieved compression and the record of ``structure.json``."""

    in_features: int
    out_features: int
    kind = ""

    @property
    def compression(self) -> float:
        """Dense weights / factor parameters."""
        return self.in_features * self.out_features / self.n_factor_params

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self), "n_factor_params": self.n_factor_params,
                "compression": self.compression, "rank_bound": self.rank_bound}


@dataclass(frozen=True)
class KroneckerPlan(_Plan):
    """W = Σ_{k<rank} A_k ⊗ B_k, A_k [m1, n1], B_k [out/m1, in/n1] (numbers of rows/columns)."""

    in_features: int
    out_features: int
    m1: int
    n1: int
    rank: int

    kind = "kronecker"

    @property
    def m2(self) -> int:
        return self.out_features // self.m1

    @property
    def n2(self) -> int:
        return self.in_features // self.n1

    @property
    def n_factor_params(self) -> int:
        """Factor parameters (no bias): rank·(m1·n1 + m2·n2)."""
        return self.rank * (self.m1 * self.n1 + self.m2 * self.n2)

    @property
    def rank_bound(self) -> int:
        """An upper bound on rank(W): rank · min(m1, n1) · min(m2, n2)."""
        return min(self.rank * min(self.m1, self.n1) * min(self.m2, self.n2), self.in_features, self.out_features)


@dataclass(frozen=True)
class MonarchPlan(_Plan):
    """W = P_out · blockdiag(L_1..L_q) · P · blockdiag(R_1..R_k): k input blocks, q output blocks."""

    in_features: int
    out_features: int
    in_blocks: int
    out_blocks: int

    kind = "monarch"

    @property
    def n_factor_params(self) -> int:
        """Factor parameters (no bias): q·in + k·out."""
        return self.out_blocks * self.in_features + self.in_blocks * self.out_features

    @property
    def rank_bound(self) -> int:
        """An upper bound on rank(W): min(k·q, in, out)."""
        return min(self.in_blocks * self.out_blocks, self.in_features, self.out_features)


def _plan_from_dict(d: dict) -> KroneckerPlan | MonarchPlan:
    cls = {"kronecker": KroneckerPlan, "monarch": MonarchPlan}.get(d.get("kind"))
    if cls is None:
        raise GenboundError(f"{STRUCTURE_JSON}: unknown layer kind {d.get('kind')!r}")
    return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__})


def plan_layer(kind: str, in_features: int, out_features: int, compression: float) -> KroneckerPlan | MonarchPlan:
    """The factorisation of an ``out_features × in_features`` weight nearest a compression factor.

    Parameters
    ----------
    kind : {"kronecker", "monarch"}
        The structure.
    in_features, out_features : int
        n and m of the dense weight [m, n].
    compression : float
        Wanted m·n / factor parameters (> 1).

    Returns
    -------
    KroneckerPlan or MonarchPlan
        The candidate whose parameter count is nearest m·n / compression in log scale (ties in the
        module docstring); GenboundError if no candidate compresses at all (e.g. a prime-sized layer).
    """
    check_structure(kind, compression)
    if kind == "dense":
        raise GenboundError("plan_layer needs kronecker or monarch")
    n, m = int(in_features), int(out_features)
    target = m * n / float(compression)
    cands: list[tuple[tuple, KroneckerPlan | MonarchPlan]] = []
    if kind == "kronecker":
        for m1 in _divisors(m):
            for n1 in _divisors(n):
                max_rank = min(m1 * n1, (m // m1) * (n // n1))
                for r in range(1, max_rank + 1):
                    p = KroneckerPlan(n, m, m1, n1, r)
                    if p.n_factor_params >= m * n:
                        break
                    key = (round(abs(math.log(p.n_factor_params / target)), 12), -p.rank_bound, r,
                           abs(math.log(m1 * n1 / ((m // m1) * (n // n1)))), m1, n1)
                    cands.append((key, p))
    else:
        for k in _divisors(n):
            for q in _divisors(m):
                p = MonarchPlan(n, m, k, q)
                if p.n_factor_params >= m * n:
                    continue
                key = (round(abs(math.log(p.n_factor_params / target)), 12), -p.rank_bound, abs(math.log(k / q)), k, q)
                cands.append((key, p))
    if not cands:
        raise GenboundError(f"a {m}×{n} weight has no {kind} factorisation with fewer parameters than {m * n}")
    return min(cands, key=lambda c: c[0])[1]


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------
class _StructuredLinear(nn.Module):
    """What both structured layers share: the plan, two factor matrices (``weight_factors``, drawn
    N(0, std²) in that order), a dense bias, the forward through :meth:`dense_weight`."""

    weight_factors: tuple[str, str] = ()

    def __init__(self, plan, shapes: tuple[tuple[int, int], tuple[int, int]], std: float, bias: bool):
        super().__init__()
        self.plan = plan
        self.in_features, self.out_features = plan.in_features, plan.out_features
        for attr, shape in zip(self.weight_factors, shapes):
            setattr(self, attr, nn.Parameter(torch.empty(*shape)))
        self.bias = nn.Parameter(torch.zeros(plan.out_features)) if bias else None
        with torch.no_grad():
            for attr in self.weight_factors:
                getattr(self, attr).normal_(0.0, std)

    def dense_weight(self) -> torch.Tensor:  # pragma: no cover - defined by each class
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x Wᵀ + bias with W = :meth:`dense_weight` built from the factors (gradients reach the factors)."""
        return torch.nn.functional.linear(x, self.dense_weight(), self.bias)

    def _output(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A factored product's [batch, ...] result as [..., out], plus the bias."""
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class KroneckerLinear(_StructuredLinear):
    """y = x Wᵀ + bias with W = Σ_k A_k ⊗ B_k (see :class:`KroneckerPlan`); x [..., in] → y [..., out]."""

    weight_factors = ("factor_a", "factor_b")

    def __init__(self, plan: KroneckerPlan, bias: bool = True):
        super().__init__(plan, ((plan.rank * plan.m1, plan.n1), (plan.rank * plan.m2, plan.n2)),
                         (_INIT_STD ** 2 / plan.rank) ** 0.25, bias)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.plan
        return self.factor_a.view(p.rank, p.m1, p.n1), self.factor_b.view(p.rank, p.m2, p.n2)

    def forward_factored(self, x: torch.Tensor) -> torch.Tensor:
        """The same map without forming W: X [n1, n2] ↦ Σ_k A_k X B_kᵀ (the structured product)."""
        a, b = self._factors()
        z = torch.einsum("bjl,kml->bkjm", x.reshape(-1, self.plan.n1, self.plan.n2), b)   # [batch, r, n1, m2]
        return self._output(torch.einsum("kij,bkjm->bim", a, z), x)                       # [batch, m1, m2]

    def dense_weight(self) -> torch.Tensor:
        """W [out, in] = Σ_k kron(A_k, B_k)."""
        a, b = self._factors()
        return torch.einsum("kij,kml->imjl", a, b).reshape(self.out_features, self.in_features)

    def extra_repr(self) -> str:
        p = self.plan
        return f"in={p.in_features}, out={p.out_features}, A {p.m1}x{p.n1}, B {p.m2}x{p.n2}, rank={p.rank}"


class MonarchLinear(_StructuredLinear):
    """y = x Wᵀ + bias with W = P_out·blockdiag(L)·P·blockdiag(R) (see :class:`MonarchPlan`)."""

    weight_factors = ("factor_r", "factor_l")

    def __init__(self, plan: MonarchPlan, bias: bool = True):
        k, q = plan.in_blocks, plan.out_blocks
        super().__init__(plan, ((k * q, plan.in_features // k), (plan.out_features, k)), _INIT_STD ** 0.5, bias)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.plan
        k, q = p.in_blocks, p.out_blocks
        return (self.factor_r.view(k, q, p.in_features // k),        # R_i [q, a]
                self.factor_l.view(q, p.out_features // q, k))       # L_j [b, k]

    def forward_factored(self, x: torch.Tensor) -> torch.Tensor:
        """The same map without forming W: block-diagonal R, the transpose P, block-diagonal L."""
        p = self.plan
        r, l = self._factors()
        z = torch.einsum("bia,iqa->biq", x.reshape(-1, p.in_blocks, p.in_features // p.in_blocks), r)  # [batch, k, q]
        return self._output(torch.einsum("biq,qti->bqt", z, l), x)    # (i,q)->(q,i), then L: [batch, q, b]

    def dense_weight(self) -> torch.Tensor:
        """W [out, in]: W[j·b + t, i·a + s] = L_j[t, i] · R_i[j, s]."""
        r, l = self._factors()
        return torch.einsum("qti,iqs->qtis", l, r).reshape(self.out_features, self.in_features)

    def extra_repr(self) -> str:
        p = self.plan
        return f"in={p.in_features}, out={p.out_features}, in_blocks={p.in_blocks}, out_blocks={p.out_blocks}"


_MODULES = {"kronecker": KroneckerLinear, "monarch": MonarchLinear}


# --------------------------------------------------------------------------------------------
# whole models
# --------------------------------------------------------------------------------------------
def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def structured_layers(model: nn.Module) -> dict[str, KroneckerLinear | MonarchLinear]:
    """The structured layers of a model, by module name (empty for a dense model)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _StructuredLinear)}


def structure_model(model: nn.Module, structure: str, compression: float) -> dict[str, dict]:
    """Replace the block linears of a GPT-NeoX ``model`` by structured layers, in place.

    Parameters
    ----------
    model : GPTNeoXForCausalLM
        The model (its dense linears are dropped; their initial values are not used).
    structure : {"kronecker", "monarch"}
        The class.
    compression : float
        The stated compression factor of every replaced weight (> 1).

    Returns
    -------
    dict
        Module name → the plan's ``to_dict()`` (what ``structure.json`` records). The new factors are
        drawn from torch's global generator, in module order (seed it for a reproducible model).
    """
    check_structure(structure, compression)
    if structure == "dense":
        return {}
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(n.endswith(s) for s in STRUCTURED_LAYERS)]
    if not targets:
        raise GenboundError("the model has no GPT-NeoX block linears to structure")
    plans = {}
    for name, lin in targets:
        plan = plan_layer(structure, lin.in_features, lin.out_features, compression)
        new = _MODULES[structure](plan, bias=lin.bias is not None).to(device=lin.weight.device,
                                                                         dtype=lin.weight.dtype)
        _set_module(model, name, new)
        plans[name] = plan.to_dict()
    return plans


def _apply_plans(model: nn.Module, plans: dict[str, dict]) -> None:
    for name, d in plans.items():
        lin = model.get_submodule(name)
        plan = _plan_from_dict(d)
        if not isinstance(lin, nn.Linear) or (lin.in_features, lin.out_features) != (plan.in_features, plan.out_features):
            raise GenboundError(f"{STRUCTURE_JSON}: layer {name} does not match the model's configuration")
        _set_module(model, name, _MODULES[plan.kind](plan, bias=lin.bias is not None))


def materialize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose structured layers are ``nn.Linear`` holding their dense weights.

    Parameters
    ----------
    model : nn.Module
        A structured (or dense: returned as a copy) GPT-NeoX model.

    Returns
    -------
    nn.Module
        The dense model (same class, same state-dict keys as a dense GPT-NeoX), on the model's device,
        in the model's mode; its weights are ``dense_weight()`` of the factors, computed without gradients.
    """
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in structured_layers(out).items():
            w = layer.dense_weight().detach().clone().contiguous()
            lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                            device=w.device, dtype=w.dtype)
            lin.weight.copy_(w)
            if layer.bias is not None:
                lin.bias.copy_(layer.bias.detach())
            lin.train(layer.training)
            _set_module(out, name, lin)
    return out


def save_structured(model: nn.Module, directory: str | Path, meta: dict) -> None:
    """Write ``structured.safetensors`` (the structured state dict) and ``structure.json`` (``meta``
    plus the layer plans) into ``directory`` (each file atomically)."""
    from safetensors.torch import save_file

    layers = structured_layers(model)
    if not layers:
        raise GenboundError("save_structured: the model has no structured layers")
    d = Path(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(d / FACTORS_FILE, lambda tmp: save_file(state, str(tmp)))
    doc = {"kind": "genbound-structure", "schema_version": 1, **meta,
           "layers": {n: m.plan.to_dict() for n, m in layers.items()}}
    atomic_write_text(d / STRUCTURE_JSON, json.dumps(doc, indent=1) + "\n")


def load_structured(directory: str | Path) -> tuple[nn.Module, dict]:
    """The structured model saved in a suite model's directory, and its ``structure.json``.

    Parameters
    ----------
    directory : path
        ``DIR/<name>/`` of a structured suite member (``config.json``, ``structure.json``,
        ``structured.safetensors``).

    Returns
    -------
    (GPTNeoXForCausalLM, dict)
        The model in float32, eval mode, on the CPU (its state loaded strictly), and the structure record.
    """
    from safetensors.torch import load_file
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    d = Path(directory)
    if not (d / STRUCTURE_JSON).is_file() or not (d / FACTORS_FILE).is_file():
        raise GenboundError(f"{d} is not a structured suite model (no {STRUCTURE_JSON} / {FACTORS_FILE})")
    doc = json.loads((d / STRUCTURE_JSON).read_text(encoding="utf-8"))
    model = GPTNeoXForCausalLM(GPTNeoXConfig.from_pretrained(str(d)))
    _apply_plans(model, doc["layers"])
    model.load_state_dict(load_file(str(d / FACTORS_FILE)), strict=True)
    return model.eval(), doc


def structured_quantized(directory: str | Path, spec: str = "rtn4", *, n_configs: int = 1, verify: bool = True,
                         progress: bool = False) -> tuple[nn.Module, Any]:
    """Quantize a structured suite member's factors and code them; returns (dense model, CodeLength).

    Parameters
    ----------
    directory : path
        The structured member's directory (see :func:`load_structured`).
    spec : str
        An RTN quantization spec (``rtn4``, ``rtn3-g32``, ``rtn4-v16``...; grammar in
        :mod:`lm_eval_genbound.complexity.quant_spec`).
    n_configs : int
        Configurations searched (charged log2 bits).
    verify : bool
        Decode the message and check it bit for bit.
    progress : bool
        tqdm bars over the layers and symbols.

    Returns
    -------
    (GPTNeoXForCausalLM, CodeLength)
        The materialisation of the quantized structured model (what is evaluated) and the certified
        code length, in bits, of the structured parameters only (factors, embeddings, head, vectors).
    """
    from lm_eval_genbound.complexity.quant_spec import parse_quant_options
    from lm_eval_genbound.complexity.quantize import quantize_model

    opts = parse_quant_options(spec)
    if opts["method"] != "rtn":
        raise GenboundError(f"structured models are coded with rtn specs only; got {spec!r}")
    model, _ = load_structured(directory)
    qm = quantize_model(model, **opts, progress=progress)
    code = qm.code_length(n_configs=n_configs, verify=verify, progress=progress)
    return materialize(qm.model), code
