"""What a user sees in a stage's log: the project's INFO lines, not other libraries' INFO chatter."""

from __future__ import annotations

import io
import logging
import os

import pytest
import torch
from torch import nn

from eva.models.summary import format_groups, group_tensors, module_group
from eva.utils.log import LEVEL_ENV, setup_logging


@pytest.fixture
def restore_root_logger():
    """`setup_logging` replaces the root logger's handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def setup_logging_into_buffer() -> io.StringIO:
    """The stage set-up, with its stderr handler pointed at a buffer the test can read."""
    setup_logging()
    stream = io.StringIO()
    (handler,) = logging.getLogger().handlers
    handler.setStream(stream)
    return stream


def emit_sample_records() -> None:
    logging.info("Loaded model config")  # open_clip's style: the root logger itself
    logging.getLogger("dvclive").info("third-party info")
    logging.getLogger("dvclive").warning("third-party warning")
    logging.getLogger("eva.stages.train").info("own info")
    logging.getLogger("eva.models").debug("own debug")


def test_third_party_info_is_demoted_and_own_info_stays(restore_root_logger, monkeypatch) -> None:
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    stream = setup_logging_into_buffer()
    emit_sample_records()
    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "WARNING dvclive: third-party warning",
        "INFO eva.stages.train: own info",
    ]


def test_debug_from_environment_shows_everything(restore_root_logger, monkeypatch) -> None:
    monkeypatch.setenv(LEVEL_ENV, "debug")
    stream = setup_logging_into_buffer()
    emit_sample_records()
    lines = [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines == [
        "DEBUG root: Loaded model config",
        "DEBUG dvclive: third-party info",
        "WARNING dvclive: third-party warning",
        "INFO eva.stages.train: own info",
        "DEBUG eva.models: own debug",
    ]


def test_bad_level_in_environment_names_the_variable(restore_root_logger, monkeypatch) -> None:
    monkeypatch.setenv(LEVEL_ENV, "chatty")
    with pytest.raises(ValueError, match=LEVEL_ENV):
        setup_logging()


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("adapters.3.temporal.down.weight", "adapters.*.temporal"),
        ("attribute_tokens.projections.label.bias", "attribute_tokens.projections"),
        ("backbone.transformer.resblocks.11.mlp.c_fc.weight", "backbone.transformer"),
        ("head.fc.weight", "head.fc"),
        ("temporal_embedding", "temporal_embedding"),
    ],
)
def test_module_group_folds_layer_indices(name: str, group: str) -> None:
    assert module_group(name) == group


def test_summary_counts_tensors_and_parameters_per_group() -> None:
    layers = nn.ModuleList(
        nn.ModuleDict({"temporal": nn.Linear(8, 2), "joint": nn.Linear(8, 2)}) for _ in range(3)
    )
    model = nn.ModuleDict({"adapters": layers, "head": nn.Linear(8, 5)})
    model.register_parameter("temporal_embedding", nn.Parameter(torch.zeros(4, 8)))
    groups = group_tensors(model.named_parameters())
    by_name = {g.name: (g.tensors, g.parameters) for g in groups}
    assert by_name == {
        "adapters.*.temporal": (6, 3 * (8 * 2 + 2)),
        "adapters.*.joint": (6, 3 * (8 * 2 + 2)),
        "head": (2, 8 * 5 + 5),
        "temporal_embedding": (1, 32),
    }
    line = format_groups(groups)
    assert "adapters.*.temporal: 6 tensors, 54 params" in line
    assert "temporal_embedding: 1 tensor, 32 params" in line
    assert len(line) < 200  # one short line, where the full list names all 15 tensors


def test_loading_open_clip_prints_no_info_lines(restore_root_logger, monkeypatch, tmp_path) -> None:
    """open_clip logs a dozen INFO lines per model load through the root logger: none reach a stage log.

    The project's own line (which model, which activation) stays.
    """
    from eva.demo.tiny import save_tiny_open_clip
    from eva.weights_io import load_open_clip

    source = save_tiny_open_clip(tmp_path / "clip")
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    stream = setup_logging_into_buffer()
    load_open_clip(source, param="model.backbone")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "INFO eva.weights_io: model.backbone: open_clip" in lines[0], lines

    monkeypatch.setenv(LEVEL_ENV, "DEBUG")
    stream = setup_logging_into_buffer()
    load_open_clip(source, param="model.backbone")
    assert "DEBUG root: Loaded model config" in stream.getvalue()  # still there for whoever asks


def test_off_a_terminal_library_progress_bars_are_off(restore_root_logger, monkeypatch) -> None:
    """transformers' "Loading weights" bar would write carriage-return lines into a stage's log file."""
    import transformers.utils.logging as transformers_logging

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    transformers_logging.enable_progress_bar()
    setup_logging_into_buffer()  # pytest's stderr is not a terminal
    assert not transformers_logging.is_progress_bar_enabled()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # for libraries imported later
