"""The pinned numerics: each library's ISA cap set before it loads, and thread-invariant training ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eva.models.thread_invariant import layer_norm, one_thread, thread_invariant_layer_norms
from eva.utils.numerics import PINNED_ISA, cpu_flags, pin_cpu_isa


def test_the_pin_fills_unset_variables_and_keeps_the_users() -> None:
    env = {"MKL_CBWR": "AUTO"}
    pinned = pin_cpu_isa(env, flags={"avx2", "fma", "sse2"})
    assert pinned == env
    assert env["MKL_CBWR"] == "AUTO"  # the user's choice wins
    assert {k: v for k, v in env.items() if k != "MKL_CBWR"} == {
        k: v for k, v in PINNED_ISA.items() if k != "MKL_CBWR"
    }


def test_a_cpu_without_avx2_keeps_its_own_code_paths() -> None:
    env: dict[str, str] = {}
    assert pin_cpu_isa(env, flags={"sse2", "sse4_2"}) == {} and env == {}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t: none\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") == set()


def _gradients(norm: nn.LayerNorm, x: torch.Tensor, threads: int) -> list[torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = x.clone().requires_grad_(True)
        norm.zero_grad()
        (norm(x) * torch.linspace(-1, 1, x.shape[-1])).square().sum().backward()
        return [x.grad, norm.weight.grad, norm.bias.grad]
    finally:
        torch.set_num_threads(before)


def test_layer_norm_gradients_do_not_depend_on_the_thread_count_and_match_aten() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 65, 96)
    norm = nn.LayerNorm(96)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    aten = _gradients(norm, x, 2)
    thread_invariant_layer_norms(norm)
    one, two = _gradients(norm, x, 1), _gradients(norm, x, 2)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)
    for ours, theirs in zip(two, aten, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # inference and forward values are ATen's own
        assert torch.equal(norm(x), F.layer_norm(x, (96,), norm.weight, norm.bias, norm.eps))


def test_a_frozen_layer_norm_still_passes_the_input_gradient() -> None:
    x = torch.randn(4, 8, requires_grad=True)
    w, b = torch.ones(8), torch.zeros(8)
    layer_norm(x, (8,), w, b, 1e-5).sum().backward()
    expected = torch.autograd.grad(F.layer_norm(x, (8,), w, b, 1e-5).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)


def test_one_thread_restores_the_count() -> None:
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
