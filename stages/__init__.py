"""Thin DVC stage entry points: `python -m stages.<name>` from the repository root.

Importing the package pins each numeric library's CPU code path (`eva.utils.numerics`) before
any stage module loads torch or numpy, so every machine computes the same bits.
"""

from eva.utils.numerics import configure_torch, pin_cpu_isa

pin_cpu_isa()
configure_torch()
