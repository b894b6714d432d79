"""The faster block code computes what the original code computed (docs/performance.md).

The reference below is the original implementation, kept here verbatim in spirit: extra tokens
inserted after CLS, the frame's own keys and values gathered with `torch.cat`, the temporal pass on
the strided `(b n) t d` view, and two `F.scaled_dot_product_attention` calls per gated attention.
Every method and every attribute-attention mode must give the same logits and the same gradients
of every tunable tensor, in fp32, to 1e-5, with the gates, adapters and time embedding moved off
their zero initialisation so that every branch contributes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from eva.demo.tiny import save_tiny_open_clip
from eva.models import METHODS, VideoClassifier, build_model
from eva.models.blocks import BlockAdapters
from eva.models.tokens import token_gated_attention
from tests.test_model import SPEC, STAGE2, B, T, make_config, make_inputs


@pytest.fixture(scope="module")
def backbone_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_open_clip(tmp_path_factory.mktemp("backbone"), SPEC)


def reference_insert(x: torch.Tensor, tokens: torch.Tensor, frames: int) -> torch.Tensor:
    per_frame = tokens.to(x.dtype).repeat_interleave(frames, dim=0)
    return torch.cat([x[:, :1], per_frame, x[:, 1:]], dim=1)  # [B*T, 1+k+N, D]


def reference_drop(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([x[:, :1], x[:, 1 + k :]], dim=1) if k else x


def reference_gated_attention(q, k, v, extra: slice, gate):
    if gate is None or extra.start == extra.stop:
        return F.scaled_dot_product_attention(q, k, v)
    keys = torch.cat([k[:, :, : extra.start], k[:, :, extra.stop :]], dim=2)
    values = torch.cat([v[:, :, : extra.start], v[:, :, extra.stop :]], dim=2)
    own = F.scaled_dot_product_attention(q, keys, values)
    scale = torch.tanh(gate).to(q.dtype)
    if gate.ndim == 2:
        gated_values = v[:, :, extra] * scale[None, :, :, None]
        return own + F.scaled_dot_product_attention(q, k[:, :, extra], gated_values)
    tokens = F.scaled_dot_product_attention(q, k[:, :, extra], v[:, :, extra])
    return own + scale.view(1, -1, 1, 1) * tokens


def reference_attend(attn, x, extra=slice(0, 0), gate=None):
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = rearrange(qkv, "s l (three h e) -> three s h l e", three=3, h=attn.num_heads)
    out = rearrange(reference_gated_attention(q, k, v, extra, gate), "s h l e -> s l (h e)")
    return attn.out_proj(out)


def reference_attention(bb, i, x, k, gate):
    block = bb.blocks[i]
    return block.ls_1(reference_attend(block.attn, x, slice(1, 1 + k), gate))


def reference_temporal(bb, i, h, k, post):
    frame_tokens = torch.cat([h[:, :1], h[:, 1 + k :]], dim=1) if k else h
    n = frame_tokens.shape[1]
    ht = rearrange(frame_tokens, "(b t) n d -> (b n) t d", t=bb.frames)
    y = rearrange(post(reference_attend(bb.blocks[i].attn, ht)), "(b n) t d -> (b t) n d", n=n)
    if not k:
        return y
    zeros = y.new_zeros(y.shape[0], k, y.shape[2])
    return torch.cat([y[:, :1], zeros, y[:, 1:]], dim=1)


def reference_block(bb, i, x, adapters: BlockAdapters | None, k, gate):
    if adapters is None:  # the frozen block (linear, full, vpt)
        x = x + reference_attention(bb, i, bb.ln_1(i, x), k, gate)
        return x + bb.mlp(i, bb.ln_2(i, x))
    h = bb.ln_1(i, x)
    if adapters.gate is not None:
        h = adapters.gate(h)
    x = x + adapters.drop_path(reference_temporal(bb, i, h, k, adapters.temporal), bb.rows_per_video)
    x = x + adapters.spatial(reference_attention(bb, i, bb.ln_1(i, x), k, gate))
    xn = bb.ln_2(i, x)
    return x + bb.mlp(i, xn) + adapters.drop_path(adapters.scale * adapters.joint(xn), bb.rows_per_video)


def reference_logits(model: VideoClassifier, video, attributes) -> torch.Tensor:
    bb = model.backbone
    checked = model._check_attributes(attributes, video.shape[0])
    x = bb.embed(video, model.temporal_embedding)
    provider = model.extra_tokens
    k = provider.num_tokens if provider is not None else 0
    for i in range(bb.num_layers):
        gate = None
        if provider is not None:
            x = reference_insert(x, provider(i, video.shape[0], checked), bb.frames)
            gate = provider.gate(i)
        module = model.adapters[i] if model.adapters is not None else None
        if model.method.layer in ("aim", "frozen"):
            x = reference_block(bb, i, x, module, k, gate)
        else:  # adaptformer, lora: no extra tokens, code unchanged
            x = model.layer_kind.run(bb, i, x, module, k, gate)
        x = reference_drop(x, k)
    return model.head(bb.features(x).mean(dim=1))


def perturb(model: VideoClassifier) -> None:
    """Every tunable tensor off its (often zero) initialisation, so every branch and gate is open."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in model.named_tunable_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))


CASES = [(method, "gated", "linear") for method in METHODS if method != "eva"] + [
    ("eva", attention, projection)
    for attention in ("gated", "gated_per_token", "joint")
    for projection in ("linear", "none")
]


@pytest.mark.parametrize(("method", "attention", "projection"), CASES)
def test_new_block_code_matches_the_reference(
    backbone_name: str, method: str, attention: str, projection: str
) -> None:
    torch.manual_seed(0)
    config = make_config(
        backbone_name,
        method,
        attributes=STAGE2 if method == "eva" else (),
        attribute_attention=attention,
        attribute_projection=projection,
    )
    model = build_model(config).eval()  # no dropout: the two runs see the same network
    perturb(model)
    video, attributes = make_inputs()
    assert video.shape[:2] == (B, T)
    tunable = [p for _, p in model.named_tunable_parameters()]

    got = model(video, attributes)
    got_grads = torch.autograd.grad(got.square().sum(), tunable)
    want = reference_logits(model, video, attributes)
    want_grads = torch.autograd.grad(want.square().sum(), tunable)

    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    for (name, _), g, w in zip(model.named_tunable_parameters(), got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("extra", [slice(0, 2), slice(5, 7), slice(2, 4)])
@pytest.mark.parametrize("gate_shape", [None, (3,), (3, 2)])
def test_token_gated_attention_matches_the_concatenating_reference(extra: slice, gate_shape) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=gen, requires_grad=True) for _ in range(3))
    gate = None if gate_shape is None else torch.randn(gate_shape, generator=gen, requires_grad=True)
    inputs = [t for t in (q, k, v, gate) if t is not None]
    got = token_gated_attention(q, k, v, extra, gate)
    want = reference_gated_attention(q, k, v, extra, gate)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    for g, w in zip(
        torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs), strict=True
    ):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_attention_does_not_depend_on_the_thread_count() -> None:
    """The fused CPU attention, forward and backward, gives the same bits on 1 and 2 threads."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 12, 203, 64), (197, 12, 8, 64)]  # spatial and temporal pass of ViT-B/16, T = 8
    threads = torch.get_num_threads()
    try:
        for shape in shapes:
            q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
            gate = torch.randn(12, generator=gen)
            results = []
            for n in (1, 2):
                torch.set_num_threads(n)
                leaves = [t.clone().requires_grad_() for t in (q, k, v, gate)]
                extra = slice(shape[2] - 6, shape[2])
                out = token_gated_attention(*leaves[:3], extra, leaves[3])
                results.append([out, *torch.autograd.grad(out.sum(), leaves)])
            for a, b in zip(*results, strict=True):
                assert torch.equal(a, b)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["eva", "vpt", "lora"])
def test_activation_checkpointing_gives_the_same_logits_and_gradients(
    backbone_name: str, method: str
) -> None:
    config = make_config(
        backbone_name,
        method,
        attributes=STAGE2 if method == "eva" else (),
        drop_path=0.3 if method == "eva" else 0.0,
    )
    model = build_model(config).train()  # drop-path on: the recomputation must draw the same masks
    perturb(model)
    model.head.dropout.p = 0.0
    video, attributes = make_inputs()
    tunable = [p for _, p in model.named_tunable_parameters()]
    results = []
    for checkpointing in (False, True):
        model.checkpointing = checkpointing
        torch.manual_seed(3)
        logits = model(video, attributes)
        results.append([logits, *torch.autograd.grad(logits.square().sum(), tunable)])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
