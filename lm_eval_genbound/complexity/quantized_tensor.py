"""The integer description of one quantized tensor: codes, scale exponents, zero points (numpy only).

    >>> import numpy as np
    >>> from lm_eval_genbound.complexity.quantized_tensor import QuantizedTensor
    >>> qt = QuantizedTensor("w", np.array([[0, 15]]), scale_exponents=np.array([[-96]]),
    ...                      zeros=np.array([[8]]), bits=4, group_size=2)
    >>> qt.dequantize()                           # scale · (code − zero), float32
    array([[-0.125   ,  0.109375]], dtype=float32)

The record the quantizers (:mod:`lm_eval_genbound.complexity.quantize`) produce, the model message
(:mod:`lm_eval_genbound.complexity.model_message`) writes and reads back, and the code length
(:mod:`lm_eval_genbound.complexity.codelength`) charges in bits. Scales are on the 2^(e/K) grid of
:mod:`lm_eval_genbound.complexity.scale_grid`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lm_eval_genbound.complexity.scale_grid import SCALE_STEPS, scale_from_exponent

__all__ = ["QuantizedTensor", "per_code", "rows_per_group"]


def rows_per_group(cols: int, group_size: int | None) -> int:
    """Rows r that one group spans in a weight with ``cols`` input columns and group size g:
    ``⌊g / cols⌋`` when the rows are shorter than a group (``cols < g``), else 1 (and 1 for one
    group per row, ``g = None``). So a narrow weight's group is r consecutive rows × all cols,
    ≈ g weights sharing one scale exponent and one zero point ("row blocks"; the last block of
    rows may be shorter). A fixed function of the shape and the spec's g: the decoder knows it in
    advance, nothing is charged for it."""
    if group_size is None or cols <= 0 or cols >= group_size:
        return 1
    return int(group_size) // int(cols)


def per_code(values: np.ndarray, rows: int, cols: int, group_size: int, row_block: int) -> np.ndarray:
    """Per-group values ``[⌈rows / r⌉, n_groups]`` (scales, zero points) spread to the codes they
    belong to, ``[rows, cols]``: row i, column j gets ``values[i // r, j // g]``."""
    return np.asarray(values)[np.arange(rows) // row_block][:, np.arange(cols) // group_size]


@dataclass(frozen=True)
class QuantizedTensor:
    """The integer description of one quantized tensor.

    Attributes:
        name: parameter name, e.g. ``"gpt_neox.layers.0.mlp.dense_h_to_4h.weight"``.
        codes: integer array ``[rows, cols]`` (rows × input dim), values in ``[0, 2**bits)``.
        scale_exponents: integer array ``[n_row_blocks, n_groups]`` with n_row_blocks =
            ⌈rows / row_block⌉; group (b, g) has the float32 scale
            ``scale_from_exponent(e[b, g], scale_steps)`` = 2^(e/K).
        zeros: integer array ``[n_row_blocks, n_groups]`` (zero points, in code units, in
            [0, 2^b)). The dequantized value is ``scale[i // row_block, g] * (codes[i, j] -
            zeros[i // row_block, g])`` (float32) for row ``i`` and column ``j`` in group ``g``.
        bits: bit width b of the codes.
        group_size: columns per group along the input dimension (the last group may be shorter).
        transposed: the parameter is stored as the transpose of ``codes`` (transformers'
            ``Conv1D`` keeps weights as [in, out]); follows from the architecture, not charged.
        scale_steps: K, grid steps per octave of the scales.
        kind: ``"weight"`` (a weight matrix: codes, exponents, zeros charged separately) or
            ``"vector"`` (a bias or LayerNorm tensor quantized per tensor: ``codes`` is one row
            of ``param_shape``'s entries, one group; charged as ``vectors_bits``).
        param_shape: the parameter's shape for a vector (``codes`` is ``[1, prod(param_shape)]``);
            None for a weight matrix (the shape is ``codes.shape``, or its transpose).
        row_block: rows per group (:func:`rows_per_group`; 1: one group per row and column group).
    """

    name: str
    codes: np.ndarray
    scale_exponents: np.ndarray
    zeros: np.ndarray
    bits: int
    group_size: int
    transposed: bool = False
    scale_steps: int = SCALE_STEPS
    kind: str = "weight"
    param_shape: tuple[int, ...] | None = None
    row_block: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``codes`` ([rows, cols])."""
        return tuple(int(s) for s in self.codes.shape)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """Shape of the parameter the codes describe."""
        if self.param_shape is not None:
            return tuple(int(s) for s in self.param_shape)
        return self.shape[::-1] if self.transposed else self.shape

    @property
    def n_params(self) -> int:
        return int(self.codes.size)

    @property
    def scales(self) -> np.ndarray:
        """float32 ``[n_row_blocks, n_groups]``: 2^(e/K) of the scale exponents."""
        return scale_from_exponent(self.scale_exponents, self.scale_steps)

    def dequantize(self) -> np.ndarray:
        """The float32 values the codes describe, shape ``shape`` (``scale · (code − zero)``)."""
        geometry = (*self.codes.shape, self.group_size, self.row_block)
        zeros = per_code(np.asarray(self.zeros).astype(np.float32), *geometry)
        return per_code(self.scales, *geometry) * (np.asarray(self.codes).astype(np.float32) - zeros)

    def dequantize_rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of :meth:`dequantize` (the same float32 values, bit for bit), so a large
        tensor can be rebuilt or checked a slice at a time."""
        codes = np.asarray(self.codes)[lo:hi]
        rows = np.arange(lo, lo + codes.shape[0]) // self.row_block
        cols = np.arange(codes.shape[1]) // self.group_size
        zeros = np.asarray(self.zeros).astype(np.float32)[rows][:, cols]
        return self.scales[rows][:, cols] * (codes.astype(np.float32) - zeros)

    def dequantize_param(self) -> np.ndarray:
        """The float32 parameter tensor itself (reshaped / transposed to ``tensor_shape``)."""
        w = self.dequantize()
        if self.param_shape is not None:
            return w.reshape(self.tensor_shape)
        return np.ascontiguousarray(w.T) if self.transposed else w
