"""Everything ``lm-eval-genbound`` checks before the model loads: the model args, each genbound
task's settings and documents, and D ≤ n from the tokenizer's count.

    >>> from lm_eval_genbound.harness.preflight import check_model_args
    >>> check_model_args({"pretrained": "/no/such/model"})
    Traceback (most recent call last):
    ...
    lm_eval_genbound.errors.GenboundError: pretrained=/no/such/model: no such folder (give a local checkpoint folder or a hub id such as org/name)

A large model (a GGUF file is dequantized first) takes minutes to load; a misspelled model arg, a
corrupt corpus line, an unknown ``quantize=`` spec or a D the documents cannot certify should not
wait for it. :func:`check_model_args` reads only the model's config (and, for D, its tokenizer);
:func:`prepare_task` validates a task's settings and builds its documents once — the task built by
the harness afterwards takes them from here (:func:`take_prepared`) instead of checking again.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from lm_eval_genbound.bound.design import SamplingDesign
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.harness.documents import build_documents
from lm_eval_genbound.harness.settings import TaskSettings, checked_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedTask:
    """A genbound task's checked settings, its documents and their sampling design."""

    settings: TaskSettings
    docs: list
    design: SamplingDesign


#: metadata (JSON, sorted keys) -> the PreparedTask built for it before the model loaded
_PREPARED: dict[str, PreparedTask] = {}


def _metadata_key(metadata: Optional[dict]) -> str:
    return json.dumps(dict(metadata or {}), sort_keys=True, default=str)


def prepare_task(metadata: Optional[dict]) -> PreparedTask:
    """Check the settings of ``metadata`` and build their documents (a GenboundError otherwise);
    kept for the task that the harness builds next with the same metadata (:func:`take_prepared`)."""
    settings = checked_settings(metadata)
    docs, design = build_documents(settings)
    prepared = PreparedTask(settings, docs, design)
    _PREPARED[_metadata_key(metadata)] = prepared
    return prepared


def take_prepared(metadata: Optional[dict]) -> Optional[PreparedTask]:
    """The PreparedTask checked for exactly this metadata before the model loaded (once; a copy of
    its settings), or None (then the task checks its settings itself)."""
    prepared = _PREPARED.pop(_metadata_key(metadata), None)
    return None if prepared is None else replace(prepared, settings=replace(prepared.settings))


# ------------------------------------------------------------------------------ model args
def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path (a hub id is ``name`` or ``org/name``)."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1
            or "\\" in name or name.endswith("/"))


def _load_config(pretrained: str, model_args: dict) -> Any:
    """The model's config from a local folder (a GGUF file's metadata too); None for a hub id."""
    from transformers import AutoConfig

    if not Path(pretrained).expanduser().is_dir():
        return None
    kw = {k: model_args[k] for k in ("gguf_file", "revision", "subfolder") if model_args.get(k)}
    try:
        return AutoConfig.from_pretrained(str(Path(pretrained).expanduser()),
                                          trust_remote_code=bool(model_args.get("trust_remote_code")), **kw)
    except (OSError, ValueError) as exc:
        raise GenboundError(f"pretrained={pretrained}: cannot read its config ({str(exc).splitlines()[0]})") from None


def accepted_model_args(config: Any) -> set[str]:
    """Model args that hf-genbound, the harness's HF model, ``from_pretrained`` or the model's config
    accept (a config attribute given as a model arg overrides it)."""
    import transformers
    from lm_eval.models.huggingface import HFLM

    from lm_eval_genbound.harness.model import genbound_model_args

    names = set(inspect.signature(HFLM.__init__).parameters) | set(genbound_model_args())
    load = transformers.PreTrainedModel.from_pretrained
    names |= set(inspect.signature(load).parameters)
    names |= set(re.findall(r"kwargs\.pop\(\s*[\"'](\w+)[\"']", inspect.getsource(load)))
    if config is not None:
        names |= set(config.to_dict()) | set(getattr(config, "attribute_map", {}) or {})
    return names - {"self", "kwargs", "model_args"}


def check_model_args(model_args: Optional[dict]) -> None:
    """The hf-genbound model args, checked without loading the model: the ``pretrained`` folder and
    its ``gguf_file`` exist, ``quantize``, ``bos_policy`` and ``stats_kernel`` are valid, and every
    key is one that hf-genbound, the harness or the model accepts (a close match is suggested).

    Raises
    ------
    GenboundError
        Naming the argument and what was expected.
    """
    from lm_eval_genbound.harness.model import unknown_model_arg_message
    from lm_eval_genbound.harness.token_stats import KERNELS

    args = dict(model_args or {})
    pretrained = args.get("pretrained")
    if isinstance(pretrained, str) and pretrained:
        folder = Path(pretrained).expanduser()
        if not folder.exists() and _looks_like_path(pretrained):
            raise GenboundError(f"pretrained={pretrained}: no such folder (give a local checkpoint folder or a "
                                "hub id such as org/name)")
        gguf = args.get("gguf_file")
        if gguf and folder.is_dir() and not (folder / str(gguf)).is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            raise GenboundError(f"gguf_file={gguf}: no such file in {pretrained}"
                                + (f" (it holds {', '.join(found)})" if found else " (it holds no .gguf file)"))
    if args.get("quantize"):
        from lm_eval_genbound.complexity.quant_spec import parse_quantize_arg
        try:
            parse_quantize_arg(str(args["quantize"]))       # a spec, or gguf (the file's own tensors)
        except GenboundError as exc:
            raise GenboundError(f"quantize={args['quantize']}: {exc}") from None
    if args.get("bos_policy") not in (None, "prefix", "none"):
        raise GenboundError(f"bos_policy={args['bos_policy']!r} must be 'prefix' or 'none'")
    if args.get("stats_kernel") not in (None, *KERNELS):
        raise GenboundError(f"stats_kernel={args['stats_kernel']!r} must be one of {', '.join(KERNELS)}")
    config = _load_config(pretrained, args) if isinstance(pretrained, str) and pretrained else None
    if config is None:
        return                                   # a hub id or a model object: the harness checks the keys
    known = accepted_model_args(config)
    for key in args:
        if key not in known:
            raise GenboundError(unknown_model_arg_message(key))


# ------------------------------------------------------------------------------ D ≤ n
def scored_token_count(prepared: PreparedTask, model_args: dict) -> Optional[int]:
    """n, the tokens the model will score for these documents, counted with the model's tokenizer
    (text sources) or known from the documents; None when the tokenizer cannot be loaded here."""
    known = [int(d["n_scored"]) for d in prepared.docs]
    if all(k >= 0 for k in known):
        return sum(known)
    from transformers import AutoTokenizer

    name = model_args.get("tokenizer") or model_args.get("pretrained")
    if not isinstance(name, str) or not Path(name).expanduser().is_dir():
        return None
    kw = {k: model_args[k] for k in ("gguf_file", "revision", "subfolder") if model_args.get(k)}
    logger.info("counting the documents' tokens with the model's tokenizer (D ≤ n is checked before the model loads)")
    tok = AutoTokenizer.from_pretrained(str(Path(name).expanduser()),
                                        trust_remote_code=bool(model_args.get("trust_remote_code")), **kw)
    drop = 1 if model_args.get("bos_policy") in (None, "none") and "bos_policy" in model_args else 0
    n = 0
    for d in prepared.docs:
        if d["n_scored"] >= 0:
            n += int(d["n_scored"])
            continue
        ids = tok.encode(d["text"], add_special_tokens=False, verbose=False)
        n += max(len(ids) - drop, 0)
    return n


def check_train_tokens(prepared: PreparedTask, model_args: dict) -> None:
    """Refuse a ``genbound_train_tokens`` D the documents cannot certify (D > n from a non-random
    subset), with the same message as the bound would give after scoring."""
    s = prepared.settings
    if s.train_tokens is None or prepared.design.is_uniform:
        return
    n = scored_token_count(prepared, model_args)
    if n is None:
        return
    try:
        prepared.design.resolve_train_tokens(n, s.train_tokens)
    except GenboundError as exc:
        if s.source == "tokens":
            raise
        # a text source cannot subsample (TaskSettings.validate): point at the source that can
        raise GenboundError(str(exc).replace(
            "score a uniform sample (genbound_subsample)",
            "score a uniform sample of a token stream (genbound_tokens with genbound_subsample)")) from None

