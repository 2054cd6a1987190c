"""Position-banded window attention in Triton (FlashAttention-2 style), forward and backward.

Tokens are sorted by their original raster position, so the keys visible to a query form one
contiguous index range. On the host, `torch.searchsorted` gives, per query i, the first visible key
lo[i] and one past the last hi[i] (and the transposed table per key for the backward). A block of
queries [m0, m1) then needs keys [lo[m0], hi[m1-1]); every key in [lo[m1-1], hi[m0]) is visible
to all of its queries. The kernels walk that range in three phases: masked edge blocks, mask-free
interior blocks (no position loads, no compares), masked edge blocks. Dropped-token sequences only
visit reachable keys. The tables depend on positions only, not on block sizes, so autotuning is free
to pick block sizes.

Numerics: fp16/bf16 (or fp32) inputs, fp32 accumulation, online softmax in base 2 (exp2) with the
scale folded into log2(e)/sqrt(D); the forward saves lse2 = log2(sum exp2(...)) per query (+inf for a
query with no visible key, so its backward probabilities are 0 and its output is 0). Backward: a
preprocessing kernel computes delta = rowsum(o * do); a dk/dv kernel iterates over the query blocks
of each key block; a dq kernel over the key blocks of each query block; no atomics (the default,
"split"). The "atomic" backward (EFLOW_TRITON_BWD=atomic) drops the dq kernel: the dk/dv kernel adds
each key block's share of dq into an fp32 buffer with atomics (5 block matmuls instead of 7). With TMA
descriptors on, each (key block, query block) share goes in as one bulk reduction of the whole tile
(`tensor_descriptor.atomic_add`, FlashAttention-3's way) instead of one atomic per element.

Loads: on Hopper (CUDA capability >= 9) the streamed tiles (K, V in the forward and dq kernels; Q, dO
and the per-query lse2 and delta vectors in the dk/dv kernel) come through TMA tensor descriptors;
otherwise through pointer arithmetic (EFLOW_TRITON_TMA, see modes.py). Both paths are tested under the
interpreter. The vectors are copied by the preprocessing kernel into rows padded to a multiple of 4
entries (16 bytes), and the dk/dv kernel starts its query range at a multiple of 4, as Triton's 1-D
descriptor loads require: one bulk copy per vector and step instead of per-entry copies (timings in
docs/BENCHMARKS.md §3 run G).

On Hopper (CUDA capability 9.x), fp16/bf16 with head dim 64 or 128, the forward and the dq kernel are
replaced by warp-specialised Gluon kernels with the same arguments (eflow_core/kernels/gluon_window.py;
EFLOW_GLUON, see modes.py; timings in docs/BENCHMARKS.md §3 run H).

Modules (this package re-exports their names, so `triton_window.X` keeps working):
- `jit.py`: the `@triton.jit` kernels and their autotune configs;
- `launch.py`: position tables, grids and launches, the descriptor / Gluon fallbacks, autotune reports;
- `ops.py`: the torch custom ops, autograd and `triton_window_attention`;
- `modes.py`: EFLOW_TRITON_TMA, EFLOW_TRITON_BWD, EFLOW_GLUON: their state, getters, setters and status.
"""
from __future__ import annotations

from eflow_core.kernels.triton_window.jit import _BWD_DKDV as _BWD_DKDV
from eflow_core.kernels.triton_window.jit import _BWD_DQ as _BWD_DQ
from eflow_core.kernels.triton_window.jit import _FWD as _FWD
from eflow_core.kernels.triton_window.jit import _TUNE_KEY as _TUNE_KEY
from eflow_core.kernels.triton_window.jit import VECTOR_ALIGN
from eflow_core.kernels.triton_window.jit import _bwd_preprocess as _bwd_preprocess
from eflow_core.kernels.triton_window.jit import _configs as _configs
from eflow_core.kernels.triton_window.jit import _window_bwd_dkdv as _window_bwd_dkdv
from eflow_core.kernels.triton_window.jit import _window_bwd_dq as _window_bwd_dq
from eflow_core.kernels.triton_window.jit import _window_fwd as _window_fwd
from eflow_core.kernels.triton_window.launch import (LOG2E, autotune_choices, autotune_timings, backward_vectors,
                                                     position_tables, window_backward, window_forward)
from eflow_core.kernels.triton_window.launch import _ensure_allocator as _ensure_allocator
from eflow_core.kernels.triton_window.launch import _last_dim_contiguous as _last_dim_contiguous
from eflow_core.kernels.triton_window.launch import _launch as _launch
from eflow_core.kernels.triton_window.launch import _precision as _precision
from eflow_core.kernels.triton_window.launch import _size_class as _size_class
from eflow_core.kernels.triton_window.launch import _strides as _strides
from eflow_core.kernels.triton_window.launch import _try_descriptor_launch as _try_descriptor_launch
from eflow_core.kernels.triton_window.launch import _try_gluon as _try_gluon
from eflow_core.kernels.triton_window.launch import _tuned_kernels as _tuned_kernels
from eflow_core.kernels.triton_window.modes import (BACKWARD_MODES, GLUON_HEAD_DIMS, GLUON_MODES, INTERPRET,
                                                    backward_mode, gluon_mode, gluon_status, set_backward_mode,
                                                    set_gluon_mode, set_tma_mode, tma_mode, tma_status)
from eflow_core.kernels.triton_window.modes import _BWD as _BWD
from eflow_core.kernels.triton_window.modes import _DESC_ATOMIC as _DESC_ATOMIC
from eflow_core.kernels.triton_window.modes import _GLUON as _GLUON
from eflow_core.kernels.triton_window.modes import _TMA as _TMA
from eflow_core.kernels.triton_window.modes import _descriptor_atomics as _descriptor_atomics
from eflow_core.kernels.triton_window.modes import _gluon_module as _gluon_module
from eflow_core.kernels.triton_window.modes import _use_descriptors as _use_descriptors
from eflow_core.kernels.triton_window.modes import _use_gluon as _use_gluon
from eflow_core.kernels.triton_window.ops import SUPPORTED_HEAD_DIMS, triton_window_attention
from eflow_core.kernels.triton_window.ops import _check as _check
from eflow_core.kernels.triton_window.ops import _window_bwd_op as _window_bwd_op
from eflow_core.kernels.triton_window.ops import _window_fwd_op as _window_fwd_op

__all__ = [
    "triton_window_attention", "position_tables", "backward_vectors", "window_forward", "window_backward",
    "autotune_choices", "autotune_timings", "backward_mode", "set_backward_mode", "BACKWARD_MODES", "tma_mode",
    "set_tma_mode", "tma_status", "gluon_mode", "set_gluon_mode", "gluon_status", "GLUON_MODES", "GLUON_HEAD_DIMS",
    "SUPPORTED_HEAD_DIMS", "VECTOR_ALIGN", "LOG2E", "INTERPRET",
]
