"""RTN a block of rows at a time, into the parameter (complexity/weight_quantizers.py
``rtn_quantize_rows_in_place``): the same codes, grids and values as the whole matrix at once."""
from __future__ import annotations

import pytest
import torch

from lm_eval_genbound.complexity.weight_quantizers import rtn_quantize_rows_in_place, rtn_quantize_weight


@pytest.mark.parametrize("cols,group_size,transposed", [(96, 32, False), (16, 64, False), (40, None, True)])
def test_rows_in_place_equal_the_whole_matrix_bit_for_bit(cols, group_size, transposed):
    g = torch.Generator().manual_seed(cols)
    W = torch.randn(203, cols, generator=g) * torch.rand(203, 1, generator=g)
    whole = rtn_quantize_weight(W, 4, group_size)
    param = W.t().contiguous() if transposed else W.clone()     # a Conv1D keeps [in, out]: a transposed view
    view = param.t() if transposed else param
    res = rtn_quantize_rows_in_place(view, 4, group_size, chunk_elements=7 * cols)   # many blocks of rows
    assert res.weight is None and res.row_block == whole.row_block and res.group_size == whole.group_size
    if group_size is not None and cols < group_size:
        assert res.row_block > 1                                   # blocks of rows share a grid
    for f in ("codes", "scale_exponents", "scales", "zeros"):
        assert torch.equal(getattr(res, f), getattr(whole, f)), f
    assert torch.equal(view.view(torch.int32), whole.weight.view(torch.int32))
