"""Per-model files of a suite run: the resumable partial state, the final checkpoint, the ``done`` marker.

    >>> from pathlib import Path
    >>> from lm_eval_genbound.suite.checkpoint import partial_state_path, load_partial_state
    >>> path = partial_state_path(Path("suite"), "neox-8x1")
    >>> str(path)
    'suite/.partial/neox-8x1/state.pt'
    >>> load_partial_state(path, settings={}, name="neox-8x1") is None  # absent, unsafe or other settings
    True

The partial state (model and optimizer state dicts, step, CPU RNG state, loss rows, times) is a
``torch.save`` file of tensors, dicts, lists, tuples and scalars only, and is read back with
``torch.load(weights_only=True)``: torch's weights-only unpickler accepts exactly these types and
no other globals are allow-listed, so a crafted ``state.pt`` (say, planted in a shared output
folder) cannot run code. A file that does not load that way, is not a genbound state, or was
written with other settings is ignored with a warning and the model is trained from step 0 (the
file is overwritten by the next checkpoint and removed when the model is done).

A finished model is ``DIR/<name>/`` (Hugging Face checkpoint, byte tokenizer, ``loss_curve.csv``),
written into a temporary directory and renamed into place; the ``done`` marker (training settings
and the ModelRecord, JSON) is written last.

Opt-in checkpoint series (``train_suite(save_checkpoints=N)``, for the prequential complexity from
checkpoints): the model as it was *before* optimizer step k (k in :func:`checkpoint_steps`) is saved
as ``DIR/.partial/<name>/checkpoints/ckpt-step<k>/`` (Hugging Face folder, byte tokenizer and
``genbound_checkpoint.json`` = {step, tokens_before, step_tokens}) and moves with the finished model
to ``DIR/<name>/checkpoints/``. Saving reads the weights only, so training is unchanged.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from lm_eval_genbound.atomic import atomic_write_with
from lm_eval_genbound.data.byte_tokenizer import save_byte_tokenizer
from lm_eval_genbound.errors import GenboundError
from lm_eval_genbound.suite.storage import DONE_MARKER, LOSS_CURVE, ModelRecord, loss_curve_csv, write_json

logger = logging.getLogger(__name__)

__all__ = ["PARTIAL_DIR", "STATE_KEYS", "CHECKPOINTS_DIR", "CHECKPOINT_META", "partial_state_path",
           "save_partial_state", "load_partial_state", "finished_record", "write_final_checkpoint",
           "checkpoint_steps", "save_series_checkpoint"]

PARTIAL_DIR = ".partial"
#: the keys of a partial state (all values tensors, state dicts or plain Python values)
STATE_KEYS = frozenset({"settings", "step", "model", "optimizer", "rng_cpu", "rows", "elapsed_s", "cpu_s"})
#: folder of a model's checkpoint series, and the metadata file in each ``ckpt-step<k>/``
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_META = "genbound_checkpoint.json"


def checkpoint_steps(n_steps: int, n_regular: int) -> tuple[int, ...]:
    """Steps whose pre-update model a checkpoint series saves (Pythia's pattern, scaled to ``n_steps``).

    Parameters
    ----------
    n_steps : int
        Optimizer steps of the model.
    n_regular : int
        Regular checkpoints: steps round(i·n_steps/n_regular), i = 1 … n_regular − 1 (≥ 1).

    Returns
    -------
    tuple of int
        Sorted unique steps: 0, the powers of two below the first regular step, the regular steps,
        and n_steps − 1 (the model before the last update: its segment is the last batch).

    Examples
    --------
    >>> checkpoint_steps(100, 10)
    (0, 1, 2, 4, 8, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)
    """
    if isinstance(n_regular, bool) or not isinstance(n_regular, int) or n_regular < 1:
        raise GenboundError(f"save_checkpoints must be a positive integer (regular checkpoints); got {n_regular!r}")
    regular = {round(i * n_steps / n_regular) for i in range(1, n_regular)}
    first = min(regular, default=n_steps)
    geometric = {2 ** i for i in range(max(1, n_steps).bit_length()) if 2 ** i < first}
    return tuple(sorted(k for k in {0, n_steps - 1} | regular | geometric if 0 <= k < n_steps))


def save_series_checkpoint(out: Path, name: str, model, *, step: int, tokens_before: int, step_tokens: int,
                           context: int) -> Path:
    """Save ``model`` (the state before optimizer step ``step``) as ``ckpt-step<step>/`` of the series.

    Parameters
    ----------
    out : Path
        The suite directory (the folder goes under ``out/.partial/<name>/checkpoints/`` until the model is done).
    name : str
        The model name.
    model : GPTNeoXForCausalLM
        The live model; only read (its mode and device are left as they are).
    step, tokens_before, step_tokens : int
        The step, the target tokens trained before it, and the target tokens of that step.
    context : int
        Training context (the tokenizer's ``model_max_length``).

    Returns
    -------
    Path
        The checkpoint folder.
    """
    final = partial_state_path(out, name).parent / CHECKPOINTS_DIR / f"ckpt-step{step}"
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _save_pretrained_quietly(model, tmp, progress=False)
    save_byte_tokenizer(tmp, model_max_length=context)
    write_json(tmp / CHECKPOINT_META, {"step": int(step), "tokens_before": int(tokens_before),
                                       "step_tokens": int(step_tokens)})
    if final.exists():  # the same step saved before an interruption: identical weights
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def partial_state_path(out: Path, name: str) -> Path:
    """``out/.partial/<name>/state.pt``: where an interrupted model's state lives."""
    return out / PARTIAL_DIR / name / "state.pt"


def save_partial_state(path: Path, state: dict) -> None:
    """Write a partial state (a dict with :data:`STATE_KEYS`) to ``path`` atomically."""
    import torch

    if set(state) != STATE_KEYS:  # pragma: no cover - programming error
        raise ValueError(f"partial state keys {sorted(state)} != {sorted(STATE_KEYS)}")
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


def load_partial_state(path: Path, settings: dict, name: str) -> dict | None:
    """The partial state at ``path`` if it loads as weights only and was written with ``settings``; else None.

    Parameters
    ----------
    path : Path
        The ``state.pt`` file (may be absent).
    settings : dict
        The training settings of the model being trained (JSON-like); a state with others is ignored.
    name : str
        The model name, for log messages.
    """
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable or not weights only (e.g. a crafted pickle): ignored, never executed
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        logger.warning("%s: ignoring partial checkpoint %s that does not load as weights only (%s); starting over",
                       name, path, reason)
        return None
    if not isinstance(state, dict) or set(state) != STATE_KEYS:
        logger.warning("%s: ignoring %s: not a genbound partial checkpoint; starting over", name, path)
        return None
    if state["settings"] != settings:
        logger.warning("%s: partial checkpoint has other settings; starting over", name)
        return None
    return state


def finished_record(final_dir: Path, settings: dict) -> ModelRecord | None:
    """The ModelRecord in ``final_dir/done`` if the model finished with ``settings``; None if not finished.

    Raises GenboundError if it finished with other settings (or its marker is unreadable).
    """
    done = final_dir / DONE_MARKER
    if not done.is_file():
        return None
    try:
        marker = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        marker = None
    if marker is not None and marker.get("settings") == settings:
        logger.info("%s: already trained (%s), skipping", final_dir.name, done)
        return ModelRecord.from_dict(marker["record"])
    diff = sorted(k for k in settings if marker is None or marker.get("settings", {}).get(k) != settings[k])
    raise GenboundError(f"{final_dir} was trained with different settings ({', '.join(diff)}); use another --out or delete it")


def _save_pretrained_quietly(model, directory: Path, progress: bool) -> None:
    """``model.save_pretrained(directory)`` with transformers' progress bars off unless ``progress``."""
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    if not progress and bars_on:
        hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(directory))
    finally:
        if not progress and bars_on:
            hf_logging.enable_progress_bar()


def write_final_checkpoint(out: Path, model, *, record: ModelRecord, settings: dict, rows: list[tuple],
                           progress: bool, extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``out/<record.name>/`` (checkpoint, tokenizer, loss curve), then its ``done`` marker; drop the partial state.

    Parameters
    ----------
    out : Path
        The suite directory.
    model : GPTNeoXForCausalLM
        The trained model (moved to the CPU and put in eval mode here).
    record, settings : ModelRecord and dict
        Written into the ``done`` marker.
    rows : list of tuple
        Loss-curve rows (step, tokens_seen, batch_tokens, loss nats/token, lr).
    progress : bool
        Show transformers' progress bars while saving.
    extra : callable or None
        Called with the temporary model directory before it is renamed into place, to add files
        (a structured member's factors and ``structure.json``).

    Returns
    -------
    Path
        The model directory.
    """
    name = record.name
    final_dir = out / name
    tmp_dir = out / f".tmp-{name}-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    model.eval()
    _save_pretrained_quietly(model.to("cpu"), tmp_dir, progress)
    save_byte_tokenizer(tmp_dir, model_max_length=record.context)
    (tmp_dir / LOSS_CURVE).write_bytes(loss_curve_csv(rows))
    if extra is not None:
        extra(tmp_dir)
    partial_dir = partial_state_path(out, name).parent
    if (partial_dir / CHECKPOINTS_DIR).is_dir():
        os.replace(partial_dir / CHECKPOINTS_DIR, tmp_dir / CHECKPOINTS_DIR)
    if final_dir.exists():  # a leftover without `done` (killed between rename and marker, or foreign)
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    write_json(final_dir / DONE_MARKER, {"settings": settings, "record": record.to_dict()})
    shutil.rmtree(partial_dir, ignore_errors=True)
    try:
        partial_dir.parent.rmdir()  # only if no other model has a partial checkpoint
    except OSError:
        pass
    return final_dir
