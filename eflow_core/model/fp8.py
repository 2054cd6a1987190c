"""FP8 (e4m3) linear layers for the VideoDiT's transformer blocks: an inference option, never the default
(issue 26, "the FP8 row").

Scheme (W8A8, dynamic activations):
- the weight W (out, in) is stored once in float8_e4m3fn with one fp32 scale per output channel,
  W ~= W_q * s_w[:, None], s_w = amax(|W[o, :]|) / 448;
- every call quantises the activation x (M, in) to e4m3 with one fp32 scale per row (token), or one
  for the whole tensor (`activation_scaling="tensor"`), s_x = amax / 448;
- y = (x_q W_q^T) * s_x[:, None] * s_w[None, :] + b, accumulated in fp32, returned in x's dtype.

Two ways to compute the product, same numbers up to the output rounding:
- "scaled_mm": `torch._scaled_mm` (CUDA sm_89+: the H100's FP8 tensor cores), row-wise scales,
  scale_a (M, 1) and scale_b (1, out), b = W_q.t() (column-major, as the op wants), the bias in the
  epilogue when the build accepts it; K and out must be multiples of 16 (M need not be);
- "emulated": dequantise both operands to fp32 and multiply (any device; the reference the tests
  and the GPU probe compare against).
`backend="auto"` runs a small probe on the weight's device once (rows not a multiple of 16, a bf16
bias) and takes "scaled_mm" only where it gives the emulation's numbers; the CPU always emulates.

Which layers `convert_linear_to_fp8` swaps (inside every `DiTBlock`; nothing outside the blocks):
- swapped: the QKV and output projections of the self-attention (GLGA and softmax blocks), the
  cross-attention's query and output projections, both FFN layers: they run over all N tokens and
  hold ~99% of the network's linear FLOPs;
- kept in bf16: `modulation` (the adaLN MLP: one row per sample, it sets every shift, scale and gate),
  `attn.gate` (2 x heads outputs, not a multiple of 16, and the gate logits decide the local/global
  mix), `cross.kv` (it runs on the ~513 text tokens only: ~0.2% of the FLOPs), and any layer whose
  in or out width is not a multiple of 16;
- outside the blocks nothing is swapped: the patch embedding and the final layer (the network's input
  and output, whose error reaches the output undamped), the SPRINT fusion (the long residual), and the
  time / guidance / text embedders (the conditioning path); together under 1% of the linear FLOPs of
  the 1.5B preset at 480p.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)          # 448
_AMAX_FLOOR = 1e-12                              # an all-zero row gets a tiny scale, not a division by 0
DEFAULT_FP8_SKIP = ("modulation", "attn.gate", "cross.kv")


def quantize_e4m3(x: torch.Tensor, per_row: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) float -> (q (..., K) float8_e4m3fn, scale fp32) with x ~= q.float() * scale.

    per_row: scale (..., 1), amax over the last dim / 448; else one scale for the tensor, shape
    (1,) * x.dim(). Values are clamped to +-448 before the cast (the cast itself may not saturate)."""
    xf = x.float()
    if per_row:
        amax = xf.abs().amax(dim=-1, keepdim=True)
    else:
        amax = xf.abs().amax().reshape([1] * x.dim())
    scale = amax.clamp(min=_AMAX_FLOOR) / E4M3_MAX
    q = (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale


def dequantize_e4m3(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q (..., K) float8 and a scale that broadcasts against it -> fp32 (..., K)."""
    return q.float() * scale


class Float8Linear(nn.Module):
    """y = x W^T + b with W in float8_e4m3fn (per-output-channel scale) and x quantised per call.

    forward(x (..., in_features)) -> (..., out_features) in x's dtype. Buffers (state dict keys):
    weight_fp8 (out, in) float8_e4m3fn, weight_scale (1, out) fp32 (the layout `_scaled_mm` takes as
    scale_b), bias (out,) in the source layer's dtype or None. Built from an nn.Linear with
    `from_linear`; inference only (no gradients reach the quantised weight).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, activation_scaling: str = "row",
                 backend: str = "emulated", bias_in_epilogue: bool = True, fast_accum: bool = False,
                 device=None, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if activation_scaling not in ("row", "tensor"):
            raise ValueError(f"activation_scaling must be 'row' or 'tensor', not {activation_scaling!r}")
        if backend not in ("emulated", "scaled_mm"):
            raise ValueError(f"backend must be 'emulated' or 'scaled_mm' (resolve 'auto' first), not {backend!r}")
        self.in_features, self.out_features = in_features, out_features
        self.activation_scaling, self.backend = activation_scaling, backend
        self.bias_in_epilogue, self.fast_accum = bias_in_epilogue, fast_accum
        self.register_buffer("weight_fp8", torch.zeros(out_features, in_features, dtype=E4M3, device=device))
        self.register_buffer("weight_scale", torch.ones(1, out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> Float8Linear:
        """Quantise `linear`'s weight (out, in) per output channel; the bias keeps its dtype."""
        weight = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, device=weight.device,
                     dtype=weight.dtype, **options)
        q, scale = quantize_e4m3(weight, per_row=True)                   # (out, in), (out, 1)
        module.weight_fp8.copy_(q)
        module.weight_scale.copy_(scale.t())
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) fp32: the weight this layer actually multiplies by."""
        return dequantize_e4m3(self.weight_fp8, self.weight_scale.t())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activation_scaling={self.activation_scaling}, backend={self.backend}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)                                          # (M, K)
        q, scale = quantize_e4m3(x2, per_row=self.activation_scaling == "row")    # (M, K), (M, 1) | (1, 1)
        if self.backend == "scaled_mm" and x.dtype in (torch.bfloat16, torch.float16):
            fuse_bias = self.bias is not None and self.bias_in_epilogue and self.bias.dtype == x.dtype
            y = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale.expand(q.shape[0], 1).contiguous(),
                                 scale_b=self.weight_scale, bias=self.bias if fuse_bias else None,
                                 out_dtype=x.dtype, use_fast_accum=self.fast_accum)
            if self.bias is not None and not fuse_bias:
                y = y + self.bias.to(y.dtype)
        else:                                                                 # the reference
            y = dequantize_e4m3(q, scale) @ self.dequantized_weight().t()
            if self.bias is not None:
                y = y + self.bias.float()
            y = y.to(x.dtype)
        return y.reshape(*lead, self.out_features)


@functools.cache
def _probe_scaled_mm(device: str) -> tuple[bool, bool, str]:
    """(scaled_mm gives the emulation's numbers, with the bias in its epilogue, why not) on `device`."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return False, False, f"{dev.type}: emulated (the reference)"
    if not hasattr(torch, "_scaled_mm"):
        return False, False, f"torch {torch.__version__} has no torch._scaled_mm"
    if torch.cuda.get_device_capability(dev) < (8, 9):
        return False, False, f"{torch.cuda.get_device_name(dev)}: FP8 tensor cores need sm_89 or newer"
    # fixed, irregular values (no RNG draw: the probe leaves the caller's random streams alone)
    linear = nn.Linear(64, 48, device=dev, dtype=torch.bfloat16)
    with torch.no_grad():
        out_scale = torch.linspace(0.05, 2.0, 48, device=dev)[:, None]        # output channels of unequal size
        linear.weight.copy_(torch.sin(torch.arange(48 * 64, device=dev) * 0.37).reshape(48, 64) * out_scale)
        linear.bias.copy_(torch.linspace(-1, 1, 48, device=dev))
    rows = torch.arange(40, device=dev, dtype=torch.float32)[:, None]             # 40 rows: not a multiple of 16
    x = (torch.cos(torch.arange(64, device=dev) * 1.3 + rows) * (1 + rows)).to(torch.bfloat16)
    reference = Float8Linear.from_linear(linear)(x).float()
    why = ""
    for fused in (True, False):
        try:
            y = Float8Linear.from_linear(linear, backend="scaled_mm", bias_in_epilogue=fused)(x).float()
        except Exception as err:                                   # noqa: BLE001 - any refusal means "do not use"
            why = f"torch._scaled_mm raised {type(err).__name__}: {str(err)[:200]}"
            continue
        error = ((y - reference).norm() / reference.norm()).item()
        if error < 1e-2:                                           # bf16 output rounding, not a different product
            return True, fused, ""
        why = f"torch._scaled_mm differs from the emulation by {error:.3g} (relative L2)"
    return False, False, why


def resolve_fp8_backend(backend: str, device: torch.device | str) -> tuple[str, bool, str]:
    """("scaled_mm" | "emulated", bias in the epilogue, note) for backend "auto" | "scaled_mm" | "emulated"."""
    if backend == "emulated":
        return "emulated", False, "emulated (asked for)"
    if backend == "scaled_mm":
        return "scaled_mm", _probe_scaled_mm(str(device))[1] if torch.device(device).type == "cuda" else True, \
            "torch._scaled_mm (asked for)"
    if backend != "auto":
        raise ValueError(f"backend must be 'auto', 'scaled_mm' or 'emulated', not {backend!r}")
    ok, fused, why = _probe_scaled_mm(str(device))
    if ok:
        return "scaled_mm", fused, f"torch._scaled_mm, row-wise scales, bias {'in the epilogue' if fused else 'added after'}"
    return "emulated", False, why


def _skipped(name: str, skip) -> bool:
    return any(name == s or name.startswith(s + ".") for s in skip)


def convert_linear_to_fp8(model: nn.Module, skip=DEFAULT_FP8_SKIP, activation_scaling: str = "row",
                          backend: str = "auto", fast_accum: bool = False) -> list[str]:
    """Swap, in place, the nn.Linear layers inside every DiTBlock of `model` for `Float8Linear`.

    skip: names relative to a block ("modulation", "attn.gate", "cross.kv" by default; a name also
    skips what is under it); layers whose in or out width is not a multiple of 16 are kept too. See
    the module docstring for what is swapped and why. backend: "auto" (probe the device once),
    "scaled_mm" or "emulated". Returns the swapped layers' names (as in `model.named_modules()`).
    Call before `compile_blocks` runs the model, or reset dynamo after."""
    from eflow_core.model.blocks import DiTBlock

    swapped: list[str] = []
    for block_name, block in model.named_modules():
        if not isinstance(block, DiTBlock):
            continue
        for name, module in list(block.named_modules()):
            if type(module) is not nn.Linear or _skipped(name, skip):
                continue
            if module.in_features % 16 or module.out_features % 16:
                continue
            resolved, fused, _ = resolve_fp8_backend(backend, module.weight.device)
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            setattr(parent, child, Float8Linear.from_linear(module, activation_scaling=activation_scaling,
                                                            backend=resolved, bias_in_epilogue=fused,
                                                            fast_accum=fast_accum))
            swapped.append(f"{block_name}.{name}" if block_name else name)
    return swapped
