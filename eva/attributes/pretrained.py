"""The attribute stage's transformers models (captioner, detector, mask model) load one way.

A hub name is resolved from the Hugging Face cache (runs are offline, `HF_HUB_OFFLINE=1`), a local
folder is one written by `save_pretrained`; anything missing fails at once with `missing_weights`,
naming the params key, instead of a hub time-out deep inside the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eva.models.loading import missing_weights


def from_pretrained(
    source: str,
    *,
    param: str,
    what: str,
    example: str,
    classes: Sequence[Any],
    model_types: Sequence[str] = (),
) -> list[Any]:
    """`cls.from_pretrained(source)` for each of `classes` (e.g. a processor, then a model).

    `what` names the model in the message ("the captioner"), `example` a hub name of its kind;
    `model_types`, when given, the `config.model_type`s the caller supports (checked on the last).
    """

    def missing(err: Exception) -> FileNotFoundError:
        detail = str(err).splitlines()[0] if str(err) else ""
        return missing_weights(
            param,
            f"Could not load {what} '{source}' (a folder written by save_pretrained, or a transformers "
            f"hub name such as {example}; {type(err).__name__}: {detail})",
        )

    path = Path(source)
    if path.exists() and not (path / "config.json").is_file():
        raise missing(FileNotFoundError(f"no config.json in '{path}'"))
    # A relative local path that does not exist would otherwise reach the hub as a repo id.
    local_only = path.exists()
    try:
        loaded = [cls.from_pretrained(source, local_files_only=local_only) for cls in classes]
    except (OSError, ValueError, KeyError) as err:
        raise missing(err) from err
    model_type = getattr(getattr(loaded[-1], "config", None), "model_type", None)
    if model_types and model_type not in model_types:
        raise missing_weights(
            param,
            f"{what.capitalize()} '{source}' is a {model_type!r} model; supported: {', '.join(model_types)}",
        )
    return loaded
