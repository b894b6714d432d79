"""Same float bits on every x86-64 machine, whatever its vector ISA: one pinned code path per library.

Imports neither torch nor numpy: it must run before they load.

Two things make CPU results machine-dependent (measured: `docs/reproducibility.md`):

* **ISA dispatch.** ATen, MKL, oneDNN and numpy each pick kernels by the CPU's widest vector ISA.
  AVX-512 kernels sum in another order than AVX2 ones, and ATen's `normal_` even draws other
  numbers, so an AVX-512 machine trained other weights from the same seed. `pin_cpu_isa` caps
  every library at one code path through its documented environment variable, which must be set
  before the library loads: the stages call it first thing (`stages/__init__.py`).
* **Thread count.** Of all the ops the demo's models run, only LayerNorm's weight and bias
  gradients depend on it (`eva.models.thread_invariant` fixes that).

A variable the user sets wins over the pin (e.g. `ATEN_CPU_CAPABILITY=avx512` for speed, at the
cost of bit-identity with other machines). The video and JPEG codecs need no pin: swscale runs
with its bit-exact flags (`eva.data.extract.resize_frame`) and libjpeg-turbo's integer DCT is
bit-exact across its SIMD paths.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

# The ISA every x86-64 machine with AVX2 + FMA (2013 on) runs: one code path per library.
PINNED_ISA = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's DispatchStub kernels (AVX2 build, not AVX-512)
    # MKL's conditional bitwise reproducibility: COMPATIBLE is the one branch MKL runs alike on
    # Intel and AMD (on AMD every other branch is ignored: measured, docs/reproducibility.md).
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's JIT kernels
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's AVX-512 dispatch targets
}
_REQUIRED_FLAGS = ("avx2", "fma")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is absent (then nothing is pinned)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def pin_cpu_isa(
    environ: MutableMapping[str, str] | None = None, flags: set[str] | None = None
) -> dict[str, str]:
    """Set each library's ISA cap in `environ` (default `os.environ`) unless the user set it.

    Only on an x86-64 CPU with AVX2 and FMA (an older CPU keeps its own paths: its results differ in
    the last bits, see docs/reproducibility.md). Call before torch or numpy is imported. Returns the
    variables in force afterwards.
    """
    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else flags
    if all(f in flags for f in _REQUIRED_FLAGS):
        for name, value in PINNED_ISA.items():
            environ.setdefault(name, value)
    return {name: environ[name] for name in PINNED_ISA if name in environ}


def configure_torch() -> None:
    """Torch-side settings of the pinned numerics; call once torch may load (after `pin_cpu_isa`).

    oneDNN's fp32 convolutions (the ViTs' patch embedding) compute other bits under another ISA cap
    (measured: SSE4.1 vs AVX2) and tile by the CPU's cache sizes, so they are switched off: ATen's
    own convolution is an im2col and a matrix product in MKL, whose pinned branch is the same everywhere.
    """
    import torch

    torch.backends.mkldnn.enabled = False
