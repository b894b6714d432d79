"""Same float bits on every x86-64 machine, whatever its core count or vector ISA.

Imports neither torch nor numpy at module level: `pin_cpu_isa` must run before they load.

What made CPU results machine-dependent, and what is pinned (measured: docs/reproducibility.md):

* **ISA dispatch.** ATen, MKL, oneDNN and numpy each pick kernels by the CPU's widest vector ISA.
  AVX-512 kernels sum in another order than AVX2 ones, and ATen's `normal_` even draws other
  numbers. `pin_cpu_isa` caps each library at one code path through its documented environment
  variable. For MKL that is the `COMPATIBLE` branch: Intel documents every other branch as
  "available only for Intel processors", and on AMD MKL ignores them.
* **Thread count.** MKL's `COMPATIBLE` branch is reproducible for a fixed number of threads only
  (small products such as the classifier head's differ between 1 and 2 threads), and ATen's
  LayerNorm backward adds per-thread partial sums. `configure_torch` therefore fixes torch's
  intra-op thread count, `EVA_NUM_THREADS` (default 2), whatever the machine's core count or
  `OMP_NUM_THREADS` says.
* **oneDNN convolutions** tile by the CPU's cache sizes and differ under another ISA cap:
  `configure_torch` switches them off (ATen's own convolution is an im2col and an MKL product).

A variable the user sets wins over the pin (e.g. `MKL_CBWR=AUTO EVA_NUM_THREADS=16` for speed, at
the cost of bit-identity with other machines). The video and JPEG codecs need no pin: swscale runs
with its bit-exact flags (`eva.data.extract.RESIZE`) and libjpeg-turbo's integer DCT is bit-exact
across its SIMD paths.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

# The ISA every x86-64 machine with AVX2 + FMA (2013 on) runs: one code path per library.
PINNED_ISA = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's DispatchStub kernels (AVX2 build, not AVX-512)
    "MKL_CBWR": "COMPATIBLE",  # the one MKL branch that runs alike on Intel and AMD
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's JIT kernels (its fp32 convolutions are off anyway)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's AVX-512 dispatch targets
}
THREADS_VARIABLE = "EVA_NUM_THREADS"
DEFAULT_THREADS = 2  # part of the numerics: another count computes other bits
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


def pinned_threads(environ: MutableMapping[str, str] | None = None) -> int:
    """torch's intra-op thread count: `EVA_NUM_THREADS`, default 2 (never the core count)."""
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_VARIABLE, str(DEFAULT_THREADS))
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be an integer >= 1; got {value!r}")
    return int(value)


def configure_torch() -> int:
    """Torch-side settings of the pinned numerics (after `pin_cpu_isa`): oneDNN's fp32 convolutions
    off, the intra-op thread count fixed. Returns the thread count."""
    import torch

    torch.backends.mkldnn.enabled = False
    threads = pinned_threads()
    torch.set_num_threads(threads)
    return threads
