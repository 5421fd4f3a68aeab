"""Byte-level tokenizer (vocabulary 256, token id == UTF-8 byte value) as ordinary HF tokenizer files.

    >>> from lm_eval_genbound.data.byte_tokenizer import build_byte_tokenizer, save_byte_tokenizer, encode_bytes
    >>> tok = build_byte_tokenizer()
    >>> tok("héllo", add_special_tokens=False).input_ids      # == list("héllo".encode("utf-8"))
    [104, 195, 169, 108, 108, 111]
    >>> tok.decode([104, 195, 169, 108, 108, 111])
    'héllo'
    >>> save_byte_tokenizer("ckpt/")   # doctest: +SKIP
    >>> encode_bytes("héllo")          # fast path, no tokenizer: np.uint8 array of the bytes
    array([104, 195, 169, 108, 108, 111], dtype=uint8)

Design:
- The vocabulary is exactly 256 tokens, one per byte value, so a model's logit dimension (the V
  that smoothing and bounds use) is 256. It is a ``tokenizers`` BPE model with no merges over the
  GPT-2 byte-to-unicode alphabet, ordered so that token id == byte value, with a ByteLevel
  pre-tokenizer (``add_prefix_space=False``, ``use_regex=False``) and a ByteLevel decoder; it is
  wrapped in ``PreTrainedTokenizerFast`` and saved as ``tokenizer.json`` + ``tokenizer_config.json``.
- There is no EOS/BOS/EOT token (``eos_token`` and ``bos_token`` are None): documents are
  separated by document masking (each training sequence lies inside one document), not by an
  end-of-text token. ``add_special_tokens=True`` adds nothing.
- Padding reuses id 0 (the NUL byte, spelled ``"Ā"`` in the byte alphabet) as ``pad_token``, so
  the vocabulary does not grow. The tokenizer is saved with ``split_special_tokens=True``, so a
  literal ``"Ā"`` (U+0100) in text is still encoded as its two UTF-8 bytes, not as the pad id.
  Caveat: ``decode(..., skip_special_tokens=True)`` drops NUL bytes (text never contains them in
  the bundled corpus).
- lm-eval's ``HFLM`` constructs with this tokenizer (it only needs a pad token). Because there is
  no BOS/EOS, ``HFLM.prefix_token_id`` is None: requests with an empty context and
  ``loglikelihood_rolling`` need an explicit ``prefix_token_id`` model argument (e.g. 0).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from lm_eval_genbound.errors import GenboundError

logger = logging.getLogger(__name__)

__all__ = [
    "BYTE_VOCAB_SIZE",
    "PAD_TOKEN_ID",
    "byte_alphabet",
    "build_byte_tokenizer",
    "save_byte_tokenizer",
    "encode_bytes",
    "decode_bytes",
]

BYTE_VOCAB_SIZE = 256
PAD_TOKEN_ID = 0


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of the byte values (GPT-2 byte-level scheme); index == byte value.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves; the
    other 68 bytes map, in increasing byte order, to U+0100, U+0101, ...
    """
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(0x100 + extra))
            extra += 1
    return out


def build_byte_tokenizer(model_max_length: int | None = None):
    """A ``PreTrainedTokenizerFast`` whose ids are the UTF-8 bytes of the text (vocab 256, pad id 0).

    model_max_length: recorded in the tokenizer config (e.g. the model's context); None = unset.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = byte_alphabet()
    vocab = {ch: b for b, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    kwargs = {}
    if model_max_length is not None:
        kwargs["model_max_length"] = int(model_max_length)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=alphabet[PAD_TOKEN_ID],
        split_special_tokens=True,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    if len(tok) != BYTE_VOCAB_SIZE or tok.pad_token_id != PAD_TOKEN_ID:  # pragma: no cover - library drift
        raise RuntimeError(f"byte tokenizer has {len(tok)} tokens and pad id {tok.pad_token_id}; expected 256 and 0")
    return tok


def save_byte_tokenizer(directory: str | os.PathLike, model_max_length: int | None = None) -> Path:
    """Write the byte tokenizer's HF files into ``directory`` (created if needed); returns the path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    build_byte_tokenizer(model_max_length).save_pretrained(str(d))
    return d


def encode_bytes(text: str) -> np.ndarray:
    """The token ids of ``text`` without a tokenizer: its UTF-8 bytes as a 1-D np.uint8 array."""
    if not isinstance(text, str):
        raise GenboundError(f"text must be a str; got {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise GenboundError(f"text is not encodable as UTF-8 (character {e.start} is a lone surrogate)") from None
    return np.frombuffer(raw, dtype=np.uint8).copy()


def decode_bytes(ids) -> str:
    """Inverse of ``encode_bytes``: ids (ints in 0..255) to text; invalid UTF-8 becomes U+FFFD."""
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise GenboundError("byte token ids must lie in 0..255")
    return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
