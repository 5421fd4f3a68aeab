"""A GGUF checkpoint loaded one tensor at a time: the model plus one tensor in memory, not two models.

    >>> from lm_eval_genbound.harness.gguf_loader import STREAMED_ARCHITECTURES
    >>> "gemma3" in STREAMED_ARCHITECTURES and "llama" in STREAMED_ARCHITECTURES
    True
    >>> "mistral" in STREAMED_ARCHITECTURES          # transformers cannot load a mistral-typed GGUF
    False

transformers (5.x) loads most GGUF architectures through its legacy path
(``load_gguf_checkpoint(return_tensors=True)``): every tensor de-quantized into a float32 state dict
held beside the model, then copied in — two copies of the weights at the peak (Gemma-3-270M: 1.07 GB
each). :func:`load_gguf_model` builds the model from its config instead, then streams the file's
tensors: each is de-quantized by ``gguf`` (in row blocks, straight into the parameter when the
parameter is float32), passed through transformers' own per-architecture ``TensorProcessor``
(the Llama q/k un-permutation, Gemma's norm − 1) under transformers' own name map
(``get_gguf_hf_weights_map``), copied into its parameter and freed. The result is bit-identical to
transformers' load (the tests compare every tensor and ``weights_sha256``).

The file's header is read by :mod:`lm_eval_genbound.harness.gguf_header` (the tensor table and the
scalar metadata; the vocabulary arrays are skipped, not parsed: 0.16 s for Gemma-3-270M's file
against 20–23 s for ``gguf``'s ``GGUFReader`` and 18 s more for transformers' config parse, which
this load used to run on top of transformers' own). The processors get the header's values of the
config keys they read (:data:`PROCESSOR_CONFIG_KEYS`, named by transformers' GGUF key map); one that
reads any other key makes the load fall back to transformers' full metadata parse.

HFLM's own config and tokenizer still ask transformers for the file's metadata, once each (25 s and
30 s for Gemma-3-270M); ``hf-genbound`` builds them inside :func:`one_metadata_parse_per_file`, so
the file is parsed once and both get the same dict (deep copies of it).

Only architectures whose processor is pure per tensor are streamed (:data:`STREAMED_ARCHITECTURES`,
and the processor class must be one of :data:`_PURE_PROCESSORS`); anything else — processors that
merge MoE experts or store tensors across calls, architectures transformers loads through its own
packed-GGUF path, a file whose tensors do not cover the model's weights with the right shapes — is
refused by :func:`stream_refusal` with the reason, and the caller loads through transformers
(one log line). The streamed model is not a transformers "quantized" model: it carries no
``hf_quantizer`` and its config no ``quantization_config`` (the weights are plain dense tensors).

Each streamed architecture is proven against transformers' load (transformers 5.25) by a tiny file
of it in tests/test_gguf_loader.py: llama, qwen2 (q/k/v biases), qwen3 (q/k norms), gemma2 and
gemma3 (sandwich norms, the norms' − 1, tied heads). Mistral is not streamed as an architecture of
its own: llama.cpp writes Mistral models as ``llama`` (streamed as such, the Llama q/k
un-permutation included), and transformers types a file as ``mistral`` only when its
``general.name`` is exactly "mistral" or its architecture is "mistral" — and then cannot load it
(``get_gguf_hf_weights_map``: "Unknown gguf model_type: mistral in gguf-py"); such a file is
refused here with that reason and transformers' load raises its own error. transformers reads no
soft-capping from a gemma2 GGUF (``attn_logit_softcapping``, ``final_logit_softcapping`` are not
mapped): the config keeps Gemma 2's defaults, 50 and 30, whatever the file says — both loads
build the model from that same config, so they agree, and a file with other caps is scored with
the defaults by either.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from lm_eval_genbound.harness.swapped import swapped

logger = logging.getLogger(__name__)

#: GGUF ``general.architecture`` values streamed (their transformers processors are pure per tensor)
STREAMED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")
#: elements de-quantized per block of rows (float32: 16 MiB, plus gguf's temporaries)
ROW_BLOCK_ELEMENTS = 1 << 22


def _pure_processors() -> tuple[type, ...]:
    """transformers' processor classes that map one tensor to one tensor without side effects."""
    from transformers.modeling_gguf_pytorch_utils import (Gemma2TensorProcessor, LlamaTensorProcessor,
                                                          TensorProcessor)

    return (TensorProcessor, LlamaTensorProcessor, Gemma2TensorProcessor)


def _packed_path_handles(architecture: str) -> bool:
    """Whether transformers loads ``architecture`` through its own GGUF quantizer path (not the legacy one)."""
    try:
        from transformers.integrations.gguf.utils import is_gguf_arch_supported
    except ImportError:                      # a transformers without that path: the legacy one loads all
        return False
    return bool(is_gguf_arch_supported(architecture))


#: the keys of transformers' GGUF config dict the streamed processors read (LlamaTensorProcessor's
#: q/k un-permutation; TensorProcessor and Gemma2TensorProcessor read none)
PROCESSOR_CONFIG_KEYS = ("num_attention_heads", "num_key_value_heads")


class _NeedsFullConfig(Exception):
    """A processor read a config key outside :data:`PROCESSOR_CONFIG_KEYS` (or one the header has as an array)."""


class _ProcessorConfig(dict):
    """The processors' config dict from the header: reading a key it does not vouch for raises
    :class:`_NeedsFullConfig`, so the load redoes the plan with transformers' full parse instead of
    guessing a value."""

    def __init__(self, values: dict, unread: frozenset = frozenset()) -> None:
        super().__init__(values)
        self._unread = unread           # keys the file has as arrays (not read from the header)

    def _check(self, key: Any) -> None:
        if key not in PROCESSOR_CONFIG_KEYS or key in self._unread:
            raise _NeedsFullConfig(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._check(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._check(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._check(key)
        return super().__contains__(key)

    def __bool__(self) -> bool:
        # kept when empty: transformers' TensorProcessor stores ``config or {}``
        return True


def processor_config(header: Any) -> dict:
    """What transformers' ``load_gguf_checkpoint(path, return_tensors=False)["config"]`` holds under
    :data:`PROCESSOR_CONFIG_KEYS`, from a :class:`~lm_eval_genbound.harness.gguf_header.GgufHeader`
    under transformers' own GGUF key map; a key absent from the file is absent here too (the Llama
    processor then leaves q/k as stored, as in transformers' load). Reading any other key raises
    :class:`_NeedsFullConfig`."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_TO_TRANSFORMERS_MAPPING

    renames = GGUF_TO_TRANSFORMERS_MAPPING["config"]
    values, unread = {}, set()
    for key in (*header.scalars, *header.array_lengths):
        prefix, _, rest = key.partition(".")
        name = renames.get(prefix, {}).get(rest)
        if name not in PROCESSOR_CONFIG_KEYS:
            continue
        if key in header.array_lengths:
            unread.add(name)
        else:
            values[name] = header.scalars[key]
    return _ProcessorConfig(values, frozenset(unread))


def stream_refusal(architecture: str, dtype: Any) -> Optional[str]:
    """Why a GGUF of ``architecture`` loaded in ``dtype`` cannot be streamed (None: it can).

    Parameters
    ----------
    architecture : str
        The file's ``general.architecture``.
    dtype : torch.dtype, str or None
        The dtype asked for (``"auto"``/None: the config's, else torch's default).
    """
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    if architecture not in STREAMED_ARCHITECTURES:
        return (f"architecture {architecture!r} is not one whose tensors stream one at a time "
                f"({', '.join(STREAMED_ARCHITECTURES)})")
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)
    if processor not in _pure_processors():
        return f"transformers' {processor.__name__} for {architecture!r} is not known to be pure per tensor"
    if _packed_path_handles(architecture):
        return f"transformers loads {architecture!r} through its own GGUF quantizer path"
    if not (dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype)
            or (isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype))):
        return f"dtype={dtype!r} is not one torch dtype"
    return None


def resolve_dtype(dtype: Any, config: Any) -> torch.dtype:
    """The dtype transformers' GGUF load gives the model: ``dtype`` itself, or for ``"auto"``/None the
    config's ``dtype`` when it names one, else torch's default (float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        return getattr(torch, dtype)
    cfg = getattr(config, "dtype", None)
    if isinstance(cfg, str):
        cfg = getattr(torch, cfg, None)
    return cfg if isinstance(cfg, torch.dtype) else torch.get_default_dtype()


def warn_transformers_load(gguf_file: str, why: str) -> None:
    """The one log line of a GGUF load that falls back to transformers' own (``why``: the reason)."""
    logger.warning("gguf_loader: loading %s through transformers (every tensor de-quantized before the model is "
                   "filled: about twice the memory): %s", gguf_file, why)


@dataclass(frozen=True)
class StreamedLoad:
    """What :func:`load_gguf_model` did: the model, or ``refused`` (why the file cannot be streamed:
    then ``model`` is None and nothing of it is kept); the tensors copied in and skipped (names the
    model has no weight for, as transformers skips them); seconds reading the header and building
    the model (``build_s``), and pairing the tensors with its weights and de-quantizing them into it
    (``stream_s``)."""

    model: Optional[torch.nn.Module]
    refused: Optional[str] = None
    n_tensors: int = 0
    skipped: tuple[str, ...] = ()
    build_s: float = 0.0
    stream_s: float = 0.0


class _Refused(Exception):
    """The file cannot be streamed into this model (the message says why)."""


def load_gguf_model(path: str | Path, config: Any, *, dtype: Any = "auto", model_class: Any = None,
                    trust_remote_code: bool = False, name_or_path: Optional[str] = None,
                    row_block_elements: int = ROW_BLOCK_ELEMENTS) -> StreamedLoad:
    """Build the model of ``config`` and fill it from the GGUF at ``path`` one tensor at a time.

    Parameters
    ----------
    path : str or Path
        The GGUF file.
    config : transformers.PretrainedConfig
        The model's config as transformers parses it from the file
        (``AutoConfig.from_pretrained(dir, gguf_file=name)``); copied, not changed.
    dtype : torch.dtype, str or None
        As ``from_pretrained``'s ``dtype`` (``"auto"``: see :func:`resolve_dtype`).
    model_class : transformers auto class, optional
        Default ``AutoModelForCausalLM``.
    trust_remote_code : bool
        Passed to ``from_config``.
    name_or_path : str, optional
        Recorded as the config's ``name_or_path`` (as ``from_pretrained`` does).
    row_block_elements : int
        Weights de-quantized at a time (whole rows; at least one row).

    Returns
    -------
    StreamedLoad
        The model (in eval mode, on the CPU), or the reason it was refused (load it through
        transformers then).
    """
    import time

    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from lm_eval_genbound.harness.gguf_header import GgufHeaderError, read_gguf_header
    from lm_eval_genbound.memory import release_freed_memory

    t0 = time.perf_counter()
    try:
        # the tensor table and scalars only: gguf's GGUFReader would parse every vocabulary entry
        header = read_gguf_header(path)
    except GgufHeaderError as exc:
        return StreamedLoad(None, str(exc))
    arch = header.architecture
    reason = stream_refusal(arch, dtype)
    if reason is not None:
        return StreamedLoad(None, reason)
    cfg = copy.deepcopy(config)
    cfg.dtype = resolve_dtype(dtype, config)
    if name_or_path is not None:
        cfg.name_or_path = name_or_path
    # no random init: every weight is filled from the file (the plan refuses a file that leaves one
    # unfilled), and untouched pages of torch.empty are never resident; buffers are built as usual
    with no_init_weights():
        model = (model_class or AutoModelForCausalLM).from_config(cfg, dtype=cfg.dtype,
                                                                    trust_remote_code=trust_remote_code)
    model.tie_weights()                      # skipped with the init (a tied head is one tensor again)
    model.eval()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        try:
            plan = _stream(header, arch, processor_config(header), model, row_block_elements)
        except _NeedsFullConfig as exc:
            # a processor read a key the header does not vouch for: transformers' own parse of the
            # metadata (every array included), then the whole plan and fill again
            from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

            logger.info("gguf_loader: the processor reads config key %r; parsing the full GGUF metadata", str(exc))
            plan = _stream(header, arch, load_gguf_checkpoint(str(path), return_tensors=False)["config"], model,
                           row_block_elements)
    except _Refused as exc:
        del model
        release_freed_memory()
        return StreamedLoad(None, str(exc))
    return StreamedLoad(model, None, len(plan.mapped), plan.skipped, build_s, time.perf_counter() - t0)


def _stream(header: Any, arch: str, gguf_config: dict, model: torch.nn.Module, row_block_elements: int) -> "_Plan":
    """Plan the file's tensors onto the model's weights, then fill each weight (the plan)."""
    plan = _plan(header.tensors, arch, gguf_config, model)
    targets = model.state_dict()
    with torch.no_grad():
        for tensor, hf_name in plan.mapped:
            _fill(targets[hf_name], tensor, plan.processor, plan.key_mapping, row_block_elements)
    return plan


@dataclass
class _Plan:
    processor: Any
    key_mapping: dict[str, str]
    mapped: list[tuple[Any, str]]           # (GGUF reader tensor, model state-dict key)
    skipped: tuple[str, ...]


def _plan(tensors: list, arch: str, gguf_config: dict, model: torch.nn.Module) -> _Plan:
    """Pair every GGUF tensor with its parameter (transformers' processor and name map); refuse a
    file that leaves a weight unfilled or whose shapes do not match."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=gguf_config)
    try:
        with _one_name_map_per_architecture():
            key_mapping = get_gguf_hf_weights_map(model, processor)
    except NotImplementedError as exc:      # a model_type gguf-py has no tensor names for (e.g. mistral)
        raise _Refused(f"transformers cannot map the tensors of this {model.config.model_type!r} model: {exc}")
    targets = model.state_dict()
    mapped, skipped, filled = [], [], set()
    for tensor in tensors:
        hf_name = key_mapping.get(tensor.name)
        if hf_name is None:
            skipped.append(tensor.name)
            continue
        shape = tuple(targets[hf_name].shape)
        if tensor.shape != shape:
            raise _Refused(f"{tensor.name} has shape {tensor.shape} in the file, {hf_name} {shape} "
                           "in the model")
        mapped.append((tensor, hf_name))
        filled.add(targets[hf_name].data_ptr())
    unfilled = [k for k, t in targets.items() if t.numel() and t.data_ptr() not in filled]
    if unfilled:
        raise _Refused(f"the file has no tensor for {len(unfilled)} of the model's weights ({', '.join(unfilled[:3])}"
                       f"{', ...' if len(unfilled) > 3 else ''})")
    return _Plan(processor, key_mapping, mapped, tuple(skipped))


@contextlib.contextmanager
def _one_name_map_per_architecture() -> Iterator[None]:
    """While open, ``gguf.get_tensor_name_map`` is memoized (restored on exit).

    transformers' ``get_gguf_hf_weights_map`` recurses into every submodule and builds gguf's
    ``TensorNameMap`` (every tensor name of every block) afresh at each: 8.6 s for SmolLM2-135M's
    30 blocks, 0.02 s with one map per (architecture, block count) — what the map depends on. The
    mapping is the same (the tests compare every weight with transformers' load)."""
    import gguf

    with swapped(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)):
        yield


#: the (positional, keyword) extra arguments of a metadata-only ``load_gguf_checkpoint`` call
_METADATA_ONLY_CALLS = (((), {}), ((False,), {}), ((), {"return_tensors": False}))


@contextlib.contextmanager
def one_metadata_parse_per_file() -> Iterator[None]:
    """While open, transformers' metadata-only GGUF parse runs once per file (restored on exit).

    Loading a GGUF model through HFLM parses the file's metadata twice with transformers'
    ``load_gguf_checkpoint(path, return_tensors=False)`` — ``GGUFReader`` plus a Python value per
    element of the vocabulary arrays — once for the config and once more inside
    ``AutoTokenizer`` (for architectures outside transformers' fast ``GGUF_CONFIG_ARCHS``, llama
    and gemma3 among them): 25 s and 30 s for Gemma-3-270M's 262,144-entry vocabulary on the
    project's CPU. While this is open the first parse of a file (keyed by its real path, size and
    modification time) is kept and every later call gets a deep copy of it, so callers that edit
    their dict cannot change what the next one sees. Calls with any other arguments (a tensor load:
    ``return_tensors=True``, ``model_to_load``) go straight through."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.load_gguf_checkpoint
    parsed: dict[tuple[str, int, int], dict] = {}

    @functools.wraps(original)
    def parse_once(gguf_checkpoint_path, *args, **kwargs):
        if (args, kwargs) not in _METADATA_ONLY_CALLS:
            return original(gguf_checkpoint_path, *args, **kwargs)
        path = Path(gguf_checkpoint_path).resolve()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in parsed:
            parsed[key] = original(gguf_checkpoint_path, return_tensors=False)
        return copy.deepcopy(parsed[key])

    with swapped(gguf_utils, "load_gguf_checkpoint", parse_once):
        yield


def _dequantize_into(tensor: Any, out: np.ndarray, row_block_elements: int) -> None:
    """De-quantize a GGUF tensor into ``out`` (float32, its torch shape) a block of rows at a time."""
    from gguf import dequantize

    data = tensor.data
    if out.ndim < 2:
        out[...] = dequantize(data, tensor.tensor_type).reshape(out.shape)
        return
    flat_out = out.reshape(-1, out.shape[-1])
    flat_in = data.reshape(-1, data.shape[-1])
    step = max(1, row_block_elements // out.shape[-1])
    for r in range(0, flat_out.shape[0], step):
        flat_out[r:r + step] = dequantize(flat_in[r:r + step], tensor.tensor_type)


def _fill(target: torch.Tensor, tensor: Any, processor: Any, key_mapping: dict[str, str],
          row_block_elements: int) -> None:
    """Copy one GGUF tensor, de-quantized and processed as transformers does, into ``target``."""
    in_place = target.dtype == torch.float32 and target.is_contiguous() and target.device.type == "cpu"
    buf = target.numpy() if in_place else np.empty(tuple(target.shape), dtype=np.float32)
    _dequantize_into(tensor, buf, row_block_elements)
    side: dict[str, dict] = {"tensors": {}}
    result = processor.process(weights=buf, name=tensor.name, tensor_key_mapping=key_mapping,
                               parsed_parameters=side)
    if result.name != tensor.name or side["tensors"]:
        raise RuntimeError(f"{type(processor).__name__} renamed or stored {tensor.name}: not a per-tensor "
                           "processor (it must not be streamed)")
    w = result.weights
    if in_place and w is buf:
        return
    if np.shares_memory(w, buf):
        w = np.array(w)                      # a view of the buffer, rearranged: copy before overwriting
    if tuple(w.shape) != tuple(target.shape):
        raise RuntimeError(f"{tensor.name} came out of {type(processor).__name__} as {tuple(w.shape)}, "
                           f"its parameter is {tuple(target.shape)}")
    target.copy_(torch.from_numpy(np.ascontiguousarray(w)))
