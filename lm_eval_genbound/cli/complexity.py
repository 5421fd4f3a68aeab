"""``genbound complexity`` (certified code length L(h)) and ``genbound hessian`` (Hessian spectra).

    $ genbound complexity --model runs/m1 --method gptq --bits 4 --group-size 64 --out m1_gptq4.json
    $ genbound complexity --model runs/m1 --method param --bits 16 --out m1_param16.json
    $ genbound complexity --model DIR --gguf-file model.Q4_1.gguf --method rtn --bits 4 --out q.json
    $ genbound complexity --model DIR --gguf-file model.Q4_1.gguf --method gguf --out g.json
    $ genbound hessian --model runs/m1 --out m1_hessian/ --probes 10 --steps 100

``main_complexity`` quantizes a Hugging Face causal LM (a local directory, loaded with
``AutoModelForCausalLM.from_pretrained``; with ``--gguf-file NAME`` the GGUF file NAME in that
directory, streamed one tensor at a time as the harness's ``gguf_file=`` model arg loads it
(:mod:`lm_eval_genbound.harness.gguf_loader`: the weights of ``from_pretrained(DIR, gguf_file=NAME)``,
one copy in memory; transformers' own load for a file the loader refuses): dequantized to ``--dtype``,
tokenizer from the file; needs the ``gguf`` package) by RTN or GPTQ and entropy-codes it
(:mod:`lm_eval_genbound.complexity.quantize`, :mod:`lm_eval_genbound.complexity.codelength`), or counts parameters,
or, with ``--method gguf``, codes the GGUF file's own quantized tensors as they are (no
re-quantization, quantization gap 0; :mod:`lm_eval_genbound.complexity.gguf_message`),
and writes the ``CodeLength`` (bits) as JSON with the model's path, ``gguf_file`` and
``weights_sha256`` (the fingerprint the harness's manifest records) — no harness run needed. GPTQ calibrates on
``--calibration-text`` (default: the bundled State of the Union training split), cut into
``--n-calibration`` seeded windows of ``--calibration-seq-len`` tokens (capped at the model window)
by the sampler that ``quantize=gptq…`` in the harness uses
(:mod:`lm_eval_genbound.complexity.calibration`): without these options, ``--method gptq --bits 4``
certifies the same L(h) as the harness's ``quantize=gptq4`` with the same seed
(``quantize_seed``) when the harness's window is ≥ 256 tokens or the model's own (else pass
``--calibration-seq-len <window>``).

``main_hessian`` writes ``hessian.json`` (SLQ estimates of tr H, tr √|H| and the spectral
density of the loss Hessian on a batch of tokens; per-layer proxy Hessians E[x xᵀ] with exact
eigenvalues where d ≤ 4096) and ``spectral_density.png``.

Text is tokenized with the model directory's tokenizer; without tokenizer files, a model whose
vocabulary has ≥ 256 entries is fed the UTF-8 bytes of the text (the project's byte-level
convention); only the first 4,000,000 characters of a text are used. ``--tokens`` and
``--calibration-text`` also accept a ``.npy`` array of token ids. Files are written atomically
with a ``schema_version``.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lm_eval_genbound.atomic import atomic_write_bytes, atomic_write_with
from lm_eval_genbound.memory import release_freed_memory
from lm_eval_genbound.complexity.calibration import (CALIBRATION_TEXT_CHARS, DEFAULT_N_SEQ, DEFAULT_SEQ_LEN,
                                                     calibration_windows, default_calibration_text)
from lm_eval_genbound.complexity.parameters import parameter_counts
from lm_eval_genbound.complexity.quant_spec import (DEFAULT_GROUP_SIZE, DEFAULT_VECTOR_BITS, SUPPORTED_BITS,
                                                    VECTOR_BITS, format_quant_spec)
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.progress import add_progress_flag
from lm_eval_genbound.record import dumps

logger = logging.getLogger(__name__)

__all__ = ["main_complexity", "main_hessian", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt",
                    "spiece.model")


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def _write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (dumps(obj) + "\n").encode("utf-8"))


def _device(name: str):
    import torch  # noqa: PLC0415

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenboundError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GenboundError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:0, auto)") from None


def _load_model(model_dir: str, device, dtype: str = "float32", progress: bool = True,
                attn_implementation: str | None = None, gguf_file: str | None = None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    if not progress:
        hf_logging.disable_progress_bar()

    p = Path(model_dir)
    if not p.is_dir():
        raise GenboundError(f"model directory not found: {model_dir}")
    if gguf_file is not None:
        if not (p / gguf_file).is_file():
            raise GenboundError(f"--gguf-file {gguf_file}: no such file in {model_dir}")
    elif not (p / "config.json").is_file():
        gguf = sorted(f.name for f in p.glob("*.gguf"))
        raise GenboundError(f"{model_dir} has no config.json; expected a Hugging Face model directory"
                            + (f" (for a GGUF model pass --gguf-file, e.g. --gguf-file {gguf[0]})" if gguf else ""))
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    import transformers  # noqa: PLC0415

    major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
    kwargs: dict[str, Any] = {"dtype" if major_minor >= (4, 56) else "torch_dtype": torch_dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
        if attn_implementation is None:       # one copy of the weights: the file streamed into the model
            model = _stream_gguf(p, gguf_file, torch_dtype)
            if model is not None:
                return model.to(device).eval()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as e:
        what = f"{model_dir}/{gguf_file}" if gguf_file else model_dir
        raise GenboundError(f"cannot load a causal LM from {what}: {str(e).splitlines()[0]}") from None
    model.to(device)
    model.eval()
    return model


def _stream_gguf(model_dir: Path, gguf_file: str, dtype):
    """The GGUF model streamed one tensor at a time (:mod:`lm_eval_genbound.harness.gguf_loader`, the
    harness's default load: weights bit-identical to ``from_pretrained``'s); None (one log line why)
    when the loader refuses the file, which transformers then loads."""
    from transformers import AutoConfig  # noqa: PLC0415

    from lm_eval_genbound.harness.gguf_loader import load_gguf_model, warn_transformers_load  # noqa: PLC0415

    try:
        config = AutoConfig.from_pretrained(str(model_dir), gguf_file=gguf_file)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise GenboundError(f"cannot load a causal LM from {model_dir}/{gguf_file}: {str(e).splitlines()[0]}") from None
    load = load_gguf_model(model_dir / gguf_file, config, dtype=dtype, name_or_path=str(model_dir))
    if load.model is None:
        warn_transformers_load(gguf_file, load.refused)
    return load.model


def _tokenize(text: str, model_dir: str, model, gguf_file: str | None = None) -> np.ndarray:
    """Token ids of ``text`` (1-D int64): the directory's (or GGUF file's) tokenizer, else UTF-8 bytes."""
    text = text[:CALIBRATION_TEXT_CHARS]
    tok = None
    # transformers would build an empty tokenizer from the config alone: only load real files
    if gguf_file is not None or any((Path(model_dir) / f).is_file() for f in _TOKENIZER_FILES):
        try:
            from transformers import AutoTokenizer  # noqa: PLC0415

            tok = AutoTokenizer.from_pretrained(model_dir, **({"gguf_file": gguf_file} if gguf_file else {}))
        except Exception as e:
            raise GenboundError(f"cannot load the tokenizer of {model_dir}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if tok is not None:
        ids = np.asarray(tok(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64).reshape(-1)
        if text and ids.size == 0:
            raise GenboundError(f"the tokenizer of {model_dir} turns the text into no tokens")
    else:
        vocab = int(getattr(model.config, "vocab_size", 0) or 0)
        if vocab < 256:
            raise GenboundError(f"{model_dir} has no tokenizer and a vocabulary of {vocab} < 256; cannot use byte tokens")
        from lm_eval_genbound.data.byte_tokenizer import encode_bytes  # noqa: PLC0415

        ids = encode_bytes(text).astype(np.int64)
    return ids


def _read_text(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise GenboundError(f"text file not found: {path}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GenboundError(f"{path} is not UTF-8 text (byte {e.start}); pass a .npy file for token ids") from None


def _token_stream(tokens_file: str | None, model_dir: str, model, gguf_file: str | None = None) -> np.ndarray:
    if tokens_file is not None and tokens_file.endswith(".npy"):
        p = Path(tokens_file)
        if not p.is_file():
            raise GenboundError(f"token file not found: {tokens_file}")
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise GenboundError(f"cannot read {tokens_file} as a .npy array: {e}") from None
        if not np.issubdtype(arr.dtype, np.integer):
            raise GenboundError(f"{tokens_file} holds {arr.dtype} values; token ids must be integers")
        return arr.reshape(-1).astype(np.int64)
    text = default_calibration_text() if tokens_file is None else _read_text(tokens_file)
    ids = _tokenize(text, model_dir, model, gguf_file)
    if ids.size < 2:
        raise GenboundError("the text has fewer than 2 tokens")
    return ids


def _windows(model, ids: np.ndarray, n_seq: int, seq_len: int, seed: int):
    """The seeded windows [n_seq, T] (LongTensor) of the shared calibration sampler, capped at the model window."""
    import torch  # noqa: PLC0415

    window = getattr(model.config, "max_position_embeddings", None) or None
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab and (ids.min() < 0 or ids.max() >= vocab):
        raise GenboundError(f"token ids must lie in [0, {vocab}); got range [{ids.min()}, {ids.max()}]")
    return torch.from_numpy(calibration_windows(ids, seed=seed, n_seq=n_seq, seq_len=seq_len, max_len=window))


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _guard(func, argv: Sequence[str] | None) -> int:
    """Also run directly (``python -m``): the dispatcher's ``error:``/exit-2 guard, on sys.argv by default."""
    from lm_eval_genbound.cli import run_guarded

    return run_guarded(func, sys.argv[1:] if argv is None else argv)


# --------------------------------------------------------------------------------------------
# genbound complexity
# --------------------------------------------------------------------------------------------
def main_complexity(argv: Sequence[str] | None = None) -> int:
    """``genbound complexity``: certified code length L(h) (bits) of a model, written as JSON."""
    return _guard(_main_complexity, argv)


def _main_complexity(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="genbound complexity", description=main_complexity.__doc__)
    p.add_argument("--model", required=True,
                   help="Hugging Face model directory (local); with --gguf-file, the directory holding it")
    p.add_argument("--gguf-file", default=None, metavar="NAME",
                   help="load the GGUF file NAME inside --model (needs the gguf package)")
    p.add_argument("--method", required=True, choices=["rtn", "gptq", "param", "gguf"],
                   help="rtn / gptq: quantize and entropy-code; param: b bits × N parameters; gguf: entropy-code "
                        "the --gguf-file's own quantized tensors (no re-quantization, gap 0)")
    p.add_argument("--bits", type=float, default=4, help="bits per weight (rtn/gptq: 2, 3, 4, 8; param: any > 0)")
    p.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE,
                   help=f"columns per quantization group (0: one per row; default {DEFAULT_GROUP_SIZE})")
    p.add_argument("--calibration-text", default=None,
                   help="GPTQ calibration text file or .npy token ids (default: bundled SOTU train)")
    p.add_argument("--n-calibration", type=_positive_int, default=DEFAULT_N_SEQ,
                   help=f"GPTQ calibration windows (default {DEFAULT_N_SEQ})")
    p.add_argument("--calibration-seq-len", type=_positive_int, default=DEFAULT_SEQ_LEN,
                   help=f"tokens per calibration window (capped at the model window; default {DEFAULT_SEQ_LEN})")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows")
    p.add_argument("--vector-bits", type=int, default=None,
                   help="bits of the per-tensor grid of biases and LayerNorm (2-8; 16 keeps them in 16 bits; "
                        f"default {DEFAULT_VECTOR_BITS})")
    p.add_argument("--keep-fp16", action="append", default=[], metavar="PATTERN",
                   help="keep weights whose name matches this glob in 16 bits (repeatable)")
    p.add_argument("--n-configs", type=_positive_int, default=1,
                   help="configurations searched (adds log2 of this to L)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    add_progress_flag(p)
    p.add_argument("--out", required=True, help="output JSON file")
    a = p.parse_args(None if argv is None else list(argv))
    out = Path(a.out)
    if out.exists() and out.is_dir():
        raise GenboundError(f"--out {a.out} is a directory; expected a JSON file path")

    from lm_eval_genbound import __version__  # noqa: PLC0415
    from lm_eval_genbound.complexity.codelength import parameter_count_bits  # noqa: PLC0415
    from lm_eval_genbound.complexity.parameters import weights_sha256  # noqa: PLC0415

    if a.method == "gguf" and a.gguf_file is None:
        raise GenboundError("--method gguf codes a GGUF file's own tensors: pass --gguf-file NAME")
    if a.method == "gguf" and not (Path(a.model) / a.gguf_file).is_file():
        raise GenboundError(f"--gguf-file {a.gguf_file}: no such file in {a.model}")
    if a.method in ("param", "gguf"):
        if not (math.isfinite(a.bits) and a.bits > 0):
            raise GenboundError(f"--bits must be > 0 for parameter counting; got {a.bits}")
    else:
        if a.bits != int(a.bits) or int(a.bits) not in SUPPORTED_BITS:
            raise GenboundError(f"--bits must be one of {SUPPORTED_BITS} for {a.method}; got {a.bits:g}")
        if a.vector_bits is None:
            a.vector_bits = DEFAULT_VECTOR_BITS
        if a.vector_bits not in VECTOR_BITS:
            raise GenboundError(f"--vector-bits must be one of {VECTOR_BITS}; got {a.vector_bits}")
        if a.group_size < 0:
            raise GenboundError(f"--group-size must be ≥ 0 (0: one group per row); got {a.group_size}")
    if a.method == "gptq" and a.calibration_text is not None and not Path(a.calibration_text).is_file():
        raise GenboundError(f"text file not found: {a.calibration_text}")
    device = _device(a.device)
    model = _load_model(a.model, device, a.dtype, progress=a.progress, gguf_file=a.gguf_file)
    release_freed_memory()          # the load's temporaries (a GGUF's dequantization): the weights alone stay
    n_params = parameter_counts(model).n_params
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": "genbound_complexity", "genbound_version": __version__,
        "model": str(Path(a.model).resolve()), "gguf_file": a.gguf_file,
        "weights_sha256": weights_sha256(model), "method": a.method, "n_params": int(n_params),
        "certified": True,
    }
    if a.method == "param":
        cl = parameter_count_bits(int(n_params), float(a.bits), n_configs=a.n_configs)
        record["spec"] = cl.method
    elif a.method == "gguf":
        from lm_eval_genbound.complexity.gguf_message import gguf_code_length  # noqa: PLC0415

        del model  # the message is read from the file, tensor by tensor: one copy of the weights at a time
        release_freed_memory()
        cl = gguf_code_length(Path(a.model) / a.gguf_file, n_configs=a.n_configs, progress=a.progress)
        record["spec"] = cl.method
        record["quantization_gap_nats"] = 0.0
    else:
        cl = _quantized_code_length(a, model, record)
    record["code_length"] = cl.to_dict()
    record["total_bits"] = cl.total_bits
    record["bits_per_param"] = cl.bits_per_param
    _write_json(out, record)
    raw = (f" (raw, as stored: {cl.details['raw_bits']:.6g} bits; quantization gap 0 by construction)"
           if a.method == "gguf" else "")
    print(f"{record['spec']}: L(h) = {cl.total_bits:.6g} bits = {cl.bits_per_param:.4f} bits/param "
          f"over {cl.n_params} parameters{raw} -> {out}")
    return 0


def _quantized_code_length(a: argparse.Namespace, model, record: dict[str, Any]):
    """Quantize ``model`` as the parsed arguments say; fills ``record`` and returns the CodeLength."""
    from lm_eval_genbound.complexity.quantize import quantize_model  # noqa: PLC0415

    bits, gs = int(a.bits), (a.group_size or None)
    calib = None
    if a.method == "gptq":
        ids = _token_stream(a.calibration_text, a.model, model, a.gguf_file)
        calib = _windows(model, ids, a.n_calibration, a.calibration_seq_len, a.seed)
        record["calibration"] = {
            "source": a.calibration_text or "sotu:train", "n_seq": int(calib.shape[0]),
            "seq_len": int(calib.shape[1]), "seed": a.seed,
        }
    qm = quantize_model(model, method=a.method, bits=bits, group_size=gs, calibration=calib,
                        keep_fp16=tuple(a.keep_fp16), seed=a.seed, vector_bits=a.vector_bits,
                        progress=a.progress, in_place=True)   # one copy (fingerprint taken above)
    release_freed_memory()
    record["spec"] = format_quant_spec(a.method, bits, gs, a.vector_bits)
    record["keep_fp16"] = list(a.keep_fp16)
    record["vector_bits"] = a.vector_bits
    record["scale_steps"] = qm.scale_steps
    if qm.proxy_losses:
        record["gptq_proxy_losses"] = qm.proxy_losses
    return qm.code_length(n_configs=a.n_configs, progress=a.progress)


# --------------------------------------------------------------------------------------------
# genbound hessian
# --------------------------------------------------------------------------------------------
def main_hessian(argv: Sequence[str] | None = None) -> int:
    """``genbound hessian``: loss-Hessian spectral density (SLQ) and layer proxy Hessians."""
    return _guard(_main_hessian, argv)


def _main_hessian(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="genbound hessian", description=main_hessian.__doc__)
    p.add_argument("--model", required=True, help="Hugging Face model directory (local)")
    p.add_argument("--out", required=True, help="output directory (hessian.json, spectral_density.png)")
    p.add_argument("--tokens", default=None,
                   help="text file or .npy token ids (default: bundled SOTU train text)")
    p.add_argument("--probes", type=_positive_int, default=10, help="Hutchinson probes (default 10)")
    p.add_argument("--steps", type=_positive_int, default=100, help="Lanczos steps per probe (default 100)")
    p.add_argument("--n-seq", type=_positive_int, default=8, help="sequences in the token batch (default 8)")
    p.add_argument("--seq-len", type=_positive_int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the windows and the probes")
    p.add_argument("--exact-max-dim", type=int, default=4096, help="exact eigvalsh up to this layer input dim")
    p.add_argument("--no-loss-hessian", action="store_true", help="only the per-layer proxy Hessians")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    add_progress_flag(p)
    a = p.parse_args(None if argv is None else list(argv))
    out_dir = Path(a.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenboundError(f"--out {a.out} exists and is not a directory")

    import torch  # noqa: PLC0415

    from lm_eval_genbound import __version__  # noqa: PLC0415
    from lm_eval_genbound.complexity.hessian import layer_spectrum, loss_hessian_operator, proxy_hessians
    from lm_eval_genbound.complexity.slq import slq, sqrt_abs

    if a.tokens is not None and not Path(a.tokens).is_file():
        raise GenboundError(f"token file not found: {a.tokens}")
    device = _device(a.device)
    # eager attention: fused attention kernels have no double backward (Hessian-vector products)
    model = _load_model(a.model, device, progress=a.progress, attn_implementation="eager")
    ids = _token_stream(a.tokens, a.model, model)
    batch = _windows(model, ids, a.n_seq, a.seq_len, a.seed)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": "genbound_hessian", "genbound_version": __version__,
        "model": str(Path(a.model).resolve()), "n_params": parameter_counts(model).n_params,
        "tokens": {"source": a.tokens or "sotu:train", "n_seq": int(batch.shape[0]), "seq_len": int(batch.shape[1]),
                   "seed": a.seed},
        "slq": {"probes": a.probes, "steps": a.steps, "probe": "rademacher", "reorthogonalisation": "full"},
    }
    res = None
    if not a.no_loss_hessian:
        op = loss_hessian_operator(model, batch)
        basis_dtype = torch.float64 if a.steps * op.dim * 8 <= (4 << 30) else torch.float32
        res = slq(op, n_probes=a.probes, n_steps=a.steps, seed=a.seed, device=device, basis_dtype=basis_dtype,
                  progress=a.progress)
        grid, rho = res.density(n_grid=400)
        record["loss_hessian"] = {
            **res.to_dict(), "loss_nats": op.loss,
            "density": {"grid": grid.tolist(), "density": rho.tolist(), "note": "mass-1 Gaussian-smoothed SLQ density"},
            "f": "sqrt(|lambda|)",
        }
        del op
    layers = []
    for name, H in proxy_hessians(model, batch).items():
        spec = layer_spectrum(H, name=name, exact_max_dim=a.exact_max_dim, n_probes=a.probes,
                              n_steps=a.steps, seed=a.seed)
        layers.append(spec)
    record["layers"] = [s.to_dict() for s in layers]
    record["layers_total"] = {
        "sum_tr_sqrt": float(sum(s.tr_sqrt for s in layers)),
        "sum_trace": float(sum(s.trace for s in layers)),
        "mean_quip_ratio": float(np.mean([s.quip_ratio for s in layers])) if layers else float("nan"),
    }
    png = out_dir / "spectral_density.png"
    _plot(png, res, layers)
    record["figure"] = png.name
    _write_json(out_dir / "hessian.json", record)
    msg = f"{len(layers)} layer proxy Hessians"
    if res is not None:
        msg = (f"loss Hessian: tr = {res.trace():.4g}, tr sqrt|H| = {res.tr_sqrt_abs:.4g} "
               f"(± {res.trace_stderr(sqrt_abs):.2g}); " + msg)
    print(f"{msg} -> {out_dir / 'hessian.json'}")
    return 0


def _plot(path: Path, res, layers) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    if res is not None:
        grid, rho = res.density(n_grid=1000)
        ax.semilogy(grid, np.maximum(rho, 1e-12), color="C0")
        ax.set_ylim(bottom=max(1e-8, float(rho.max()) * 1e-7))
        ax.set_xlabel("eigenvalue λ of the loss Hessian")
        ax.set_ylabel("spectral density (mass 1)")
        ax.set_title(f"loss Hessian (SLQ, {res.n_probes} probes × {res.n_steps} steps)\n"
                     f"tr √|H| ≈ {res.tr_sqrt_abs:.4g}")
    else:
        ax.text(0.5, 0.5, "loss Hessian not computed", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax = axes[1]
    shown = [s for s in layers if s.eigenvalues is not None]
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(shown):
        ev = np.clip(s.eigenvalues / max(s.eigenvalues[0], 1e-300), 1e-12, None)
        ax.loglog(np.arange(1, ev.size + 1) / ev.size, ev, color=cmap(i / max(len(shown) - 1, 1)),
                  lw=1, alpha=0.8, label=s.name if len(shown) <= 8 else None)
    if shown:
        ax.set_xlabel("rank / d")
        ax.set_ylabel("λ / λ_max (clipped at 1e-12)")
        ax.set_title("layer proxy Hessians E[x xᵀ] (exact spectra)")
        if len(shown) <= 8:
            ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no exact layer spectra", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.tight_layout()
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), suffix=".png")
    finally:
        plt.close(fig)
