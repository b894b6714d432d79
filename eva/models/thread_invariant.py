"""Training that computes the same bits on any number of threads (CPU, fp32).

Each op of the demo's training steps was run at 1 and at 2 threads on the same inputs
(docs/reproducibility.md); two kinds of result differed:

* LayerNorm's weight and bias gradients: ATen splits the rows between threads and adds the
  per-thread partial sums. `thread_invariant_layer_norms` keeps ATen's input gradient (one row per
  thread, exact) and computes those two as column sums, which ATen parallelises over columns.
* the backward of an explicit softmax (`_softmax_backward_data`, BLIP's eager attention): the
  demo's captioner pretraining runs on `one_thread()`. open_clip, VideoMAE and the classifier use
  `scaled_dot_product_attention`, whose backward does not depend on the thread count.

Forward values are ATen's own.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
from torch import nn


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):  # type: ignore[override]
        out, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
        ctx.save_for_backward(x, mean, rstd, weight, bias)
        ctx.normalized_shape = normalized_shape
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, mean, rstd, weight, bias = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.native_layer_norm_backward(
                grad, x, ctx.normalized_shape, mean, rstd, weight, bias, [True, False, False]
            )[0]
        width = (weight if weight is not None else bias).numel()
        rows = grad.reshape(-1, width)  # [M, D]
        grad_w = grad_b = None
        if weight is not None and ctx.needs_input_grad[2]:
            x_hat = ((x - mean) * rstd).reshape(-1, width)
            grad_w = (rows * x_hat).sum(0).view_as(weight)
        if bias is not None and ctx.needs_input_grad[3]:
            grad_b = rows.sum(0).view_as(bias)
        return grad_x, None, grad_w, grad_b, None


def layer_norm(
    x: torch.Tensor,
    normalized_shape: tuple[int, ...],
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """`F.layer_norm` with thread-invariant weight and bias gradients."""
    return _LayerNorm.apply(x, tuple(normalized_shape), weight, bias, eps)


def _forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    trainable = any(p is not None and p.requires_grad for p in (self.weight, self.bias))
    if trainable and torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
    return self._aten_forward(x)  # GPU, lower precision, inference or frozen affine: unchanged


def thread_invariant_layer_norms(model: nn.Module) -> nn.Module:
    """Give every `nn.LayerNorm` of `model` (open_clip's and transformers' subclasses too) the
    thread-invariant backward for fp32 CPU training; other uses run the module's own forward."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and "_aten_forward" not in module.__dict__:
            module._aten_forward = module.forward
            module.forward = types.MethodType(_forward, module)
    return model


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's intra-op work on one thread inside the block (for ops whose sums depend on the count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
