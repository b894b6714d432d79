"""What machine a benchmark ran on: the CPU's name, the GPU's name and its dense peak TFLOP/s.

One table for every benchmark that reports MFU (`train_step`, `real_size`, `gpu_check`, `loader`'s
cores-per-GPU arithmetic), so their peaks cannot drift apart.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

# Dense (no sparsity) peak TFLOP/s by device name, first case-insensitive match, from the vendors'
# datasheets: bf16 tensor cores, and fp32 matrix products through TF32 tensor cores (None: the card
# has no TF32, or it is not listed here). Specific names before the names they contain (H100 PCIe
# before H100, GH200 before H200, L40S before L4).
PEAKS: tuple[tuple[str, dict[str, float | None]], ...] = (
    ("H100 PCIe", {"bf16": 756.0, "fp32": 378.0}),
    ("GH200", {"bf16": 989.0, "fp32": 494.7}),
    ("H100", {"bf16": 989.0, "fp32": 494.7}),
    ("H200", {"bf16": 989.0, "fp32": 494.7}),
    ("B200", {"bf16": 2250.0, "fp32": 1100.0}),
    ("A100", {"bf16": 312.0, "fp32": 156.0}),
    ("A10G", {"bf16": 70.0, "fp32": None}),
    ("L40S", {"bf16": 362.0, "fp32": 183.0}),
    ("L4", {"bf16": 121.0, "fp32": 60.0}),
    ("V100", {"bf16": 125.0, "fp32": None}),  # fp16 tensor cores (no bf16, no TF32)
    ("4090", {"bf16": 165.0, "fp32": 82.6}),
)
H100 = "H100"  # the GPU the loader benchmark's cores-per-GPU arithmetic is for (issue 37)


def peaks_for(name: str) -> dict[str, float | None] | None:
    """`name`'s peaks (`PEAKS`), or None for a device not listed."""
    return next((peaks for key, peaks in PEAKS if key.lower() in name.lower()), None)


def device_peaks(device: torch.device) -> tuple[str, dict[str, float | None] | None]:
    """(device name, {precision: dense peak TFLOP/s}); the CPU's name and None on the CPU."""
    if device.type != "cuda":
        return cpu_model(), None
    name = torch.cuda.get_device_name(device)
    return name, peaks_for(name)


def cpu_model() -> str:
    """The processor's marketing name (`model name` of /proc/cpuinfo), else platform.processor()."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"
