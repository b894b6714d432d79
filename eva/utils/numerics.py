"""Same float bits on the same CPU, whatever its core count or `OMP_NUM_THREADS`.

What a CPU run's bits depend on, and what is pinned (measured: docs/reproducibility.md):

* **Thread count.** MKL's products and ATen's reductions (LayerNorm's weight and bias gradients add
  per-thread partial sums; BLIP's softmax backward splits rows by thread) compute other bits on
  another number of threads. `configure_torch` therefore fixes torch's intra-op thread count (which
  also sets MKL's and OpenMP's), `EVA_NUM_THREADS` (default 2), whatever the machine's core count
  or `OMP_NUM_THREADS` says.
* **The CPU model** is not pinned. ATen, MKL and oneDNN choose kernels by the CPU's vector ISA,
  vendor and cache sizes. Capping every library at one path (ATen at AVX2, MKL's `COMPATIBLE`
  branch, oneDNN off) cost 2.9-3.2x on the demo's steps and still did not make an Intel Xeon and an
  AMD EPYC agree, so each library runs its own dispatch: a run is bit-identical on the same CPU
  model, and another CPU model moves the demo's accuracy by about a seed's spread.

The video and JPEG codecs need no pin: swscale runs with its bit-exact flags
(`eva.data.extract.RESIZE`) and libjpeg-turbo's integer DCT is bit-exact across its SIMD paths.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

THREADS_VARIABLE = "EVA_NUM_THREADS"
DEFAULT_THREADS = 2  # part of the numerics: another count computes other bits


def pinned_threads(environ: MutableMapping[str, str] | None = None) -> int:
    """torch's intra-op thread count: `EVA_NUM_THREADS`, default 2 (never the core count)."""
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_VARIABLE, str(DEFAULT_THREADS))
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be an integer >= 1; got {value!r}")
    return int(value)


def configure_torch() -> int:
    """Fix torch's intra-op thread count (and with it MKL's) at `pinned_threads()`; return it."""
    import torch

    threads = pinned_threads()
    torch.set_num_threads(threads)
    return threads
