"""Parameter counting: the one definition of N used by the bound, the suite and the code lengths.

    >>> from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    >>> m = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=256, hidden_size=16, num_hidden_layers=1,
    ...                                      num_attention_heads=2, intermediate_size=64))
    >>> counts = parameter_counts(m)
    >>> counts.n_params == sum(p.numel() for p in m.parameters()), counts.n_params_embedding
    (True, 8192)

N is every distinct parameter tensor counted once (``model.parameters()`` already yields a tied
input/output embedding once); the embedding count is the input plus output embedding, a tied
matrix counted once, and ``n_params_nonembedding = n_params − n_params_embedding``.
:func:`weights_sha256` fingerprints the weights themselves (recorded as the model's identity).
"""
from __future__ import annotations

from typing import NamedTuple


class ParameterCounts(NamedTuple):
    """Parameter counts of one model (numbers of scalars)."""

    n_params: int
    n_params_nonembedding: int

    @property
    def n_params_embedding(self) -> int:
        """Input plus output embedding parameters (a tied matrix once)."""
        return self.n_params - self.n_params_nonembedding


def parameter_counts(model) -> ParameterCounts:
    """(N total, N non-embedding) of a ``torch.nn.Module`` with ``get_input/output_embeddings``.

    Parameters
    ----------
    model : a transformers ``PreTrainedModel`` (or any module with those two accessors).

    Returns
    -------
    ParameterCounts with ``n_params`` (all distinct parameters) and ``n_params_nonembedding``.
    """
    total = sum(p.numel() for p in model.parameters())
    seen: set[int] = set()
    emb = 0
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is None:
            continue
        for p in mod.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                emb += p.numel()
    return ParameterCounts(int(total), int(total - emb))


def weights_sha256(model) -> str:
    """sha256 fingerprint of a module's weights as loaded: every ``state_dict`` entry in name
    order, hashed as its name, dtype, shape and raw bytes (hex digest).

    Parameters
    ----------
    model : torch.nn.Module
        The model (a tied tensor appears under each of its names).

    Returns
    -------
    str
        64 hex digits; it changes when any weight changes (also when the load dtype does).
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{str(t.dtype).replace('torch.', '')}|{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())     # the buffer itself: no copy of the bytes
    return h.hexdigest()
