"""Shared test set-up: offline, few threads, tiny videos made on the fly (no binary fixtures)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# As dvc.yaml's train command does: `make test` runs two pytest workers on two cores, and OpenMP threads
# spinning at a barrier made a 2-thread training test 15x slower than sleeping ones (docs/performance.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from eva.demo.data import encode_mp4  # noqa: E402
from eva.demo.tiny_training import moving_square  # noqa: E402, F401  (tests import it from here)

torch.set_num_threads(2)


def torch_threads(count: int):
    """A module-scoped autouse fixture that runs the module's tests on `count` torch threads."""

    @pytest.fixture(autouse=True, scope="module")
    def _threads():
        before = torch.get_num_threads()
        torch.set_num_threads(count)
        yield
        torch.set_num_threads(before)

    return _threads


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Refuse (and record) every socket connection: proves a code path never tries the hub, which a
    wall-clock bound could not (offline retries wait on time-outs)."""
    import socket

    connections: list = []

    def refuse(sock, address, *args):
        connections.append(address)
        raise OSError(f"test forbids network access ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return connections


def write_video(path: str | Path, frames: np.ndarray, fps: int = 12, codec: str = "libx264") -> Path:
    """Encode `frames` ([T, H, W, 3] uint8, H and W even) to a real video file with PyAV.

    H.264 goes through the demo's encoder, whose bytes depend on the pixels alone (plain
    threaded x264 is not bit-reproducible), so byte-identity tests can re-encode safely.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "libx264":
        encode_mp4(path, frames, fps)
        return path
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture
def make_video(tmp_path: Path):
    """`make_video(name, num_frames=16, size=48, seed=0)` -> path of a real mp4 in tmp_path."""

    def _make(name: str = "clip.mp4", num_frames: int = 16, size: int = 48, seed: int = 0) -> Path:
        return write_video(tmp_path / name, moving_square(num_frames, size, seed))

    return _make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """README's real-data block (marker `readme`, minutes long) first: under `make test`'s `pytest -n 2`
    it then runs on one worker beside everything else instead of after it."""
    items.sort(key=lambda item: item.get_closest_marker("readme") is None)
