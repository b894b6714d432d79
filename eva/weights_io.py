"""Pretrained weights, in one place: where the weights a params.yaml names are, and how each loads.

Every model the pipeline does not train comes from a source the params name, and is found and loaded
here, the same way for real and demo weights:

- a transformers model named by hub id (`Salesforce/blip-image-captioning-base`,
  `MCG-NJU/videomae-base`, ...) or a folder written by `save_pretrained`: `from_pretrained`; a hub
  name is read from the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`, runs are offline);
- an open_clip model: `load_open_clip`, from `local-dir:<folder>` (open_clip's own format:
  `open_clip_config.json` + `open_clip_model.safetensors`, which `write_open_clip_folder` writes), an
  architecture with a pretrained tag (`ViT-B-16` + `openai`) or a checkpoint file, or `hf-hub:org/repo`.

Every loader takes the params.yaml key it was configured by, so a missing checkpoint fails fast with
`missing_weights`, a message that says which param to set, instead of a hub time-out deep inside a
library. `sources` / `locate` / `missing` answer, without loading anything, whether each source the
params name is on this machine: the `check` stage runs them before any stage starts
(`eva.params.check_weights`), and `python -m eva.weights` (`eva/weights.py`, the command that fetches
what is missing, online) builds on them. The backbone families (`eva.models.families`) and the
attribute models (`eva.attributes`) load through here.

This module imports no torch, open_clip or transformers at import time (each function imports what it
uses), so the check stage reports a missing weight in seconds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eva.config import value_at
from eva.utils.fingerprint import path_fingerprint

if TYPE_CHECKING:
    import open_clip
    import torch

LOCAL_DIR = "local-dir:"  # open_clip's schema for a model folder
FETCH_COMMAND = "python -m eva.weights fetch"
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

log = logging.getLogger(__name__)


# -- where the weights are (no model code) ----------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One model source as params.yaml gives it. `kind`: open_clip | transformers."""

    key: str  # the params key that names it (the first one, when several share a source)
    kind: str
    name: str
    pretrained: str = ""

    @property
    def export(self) -> tuple[str, str] | None:
        """(arch, tag) for `local-dir:.../open_clip/<arch>/<tag>`, a folder fetch writes; else None."""
        if self.kind != "open_clip" or not self.name.startswith(LOCAL_DIR):
            return None
        parts = Path(self.name.removeprefix(LOCAL_DIR)).parts
        if len(parts) >= 3 and parts[-3] == "open_clip":
            return parts[-2], parts[-1]
        return None


def sources(params: Mapping[str, Any]) -> list[Source]:
    """Every model source the params name for the stages that will run, once each (first key wins).

    Each key is read as it is (a missing one names itself, as the config classes do): no defaults here.
    """
    found = [
        Source(
            "attributes.clip.model",
            "open_clip",
            value_at(params, "attributes.clip.model"),
            value_at(params, "attributes.clip.pretrained") or "",
        ),
        Source("attributes.captioner", "transformers", value_at(params, "attributes.captioner")),
    ]
    if value_at(params, "attributes.label.method") == "detector":
        found.append(
            Source("attributes.label.detector", "transformers", value_at(params, "attributes.label.detector"))
        )
    if value_at(params, "attributes.mask.method") == "model":
        found.append(
            Source("attributes.mask.model", "transformers", value_at(params, "attributes.mask.model"))
        )
    family = value_at(params, "model.backbone.family")
    found.append(
        Source(
            "model.backbone.name",
            "open_clip" if family == "open_clip" else "transformers",
            value_at(params, "model.backbone.name"),
            (value_at(params, "model.backbone.pretrained") or "") if family == "open_clip" else "",
        )
    )
    unique: dict[tuple[str, str, str], Source] = {}
    for source in found:
        if source.name:
            unique.setdefault((source.kind, source.name, source.pretrained), source)
    return list(unique.values())


def is_local(name: str) -> bool:
    """Whether a model source is a local path rather than a hub id (`org/name`), an architecture or a tag."""
    return (
        name.startswith((LOCAL_DIR, "/", "./", "../", "~"))
        or name.count("/") >= 2
        or name.endswith(CHECKPOINT_SUFFIXES)
        or Path(name).exists()
    )


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _hub_file(repo_id: str, filename: str) -> str | None:
    """The cached path of `filename` in hub repo `repo_id` (main revision), or None; never goes online."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None


def _open_clip_tag_repo(arch: str, tag: str) -> str | None:
    """The hub repo open_clip downloads tag `tag` of `arch` from, or None when the tag is not a hub one."""
    import open_clip

    parts = ((open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub") or "").strip("/").split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else None


def locate(source: Source) -> str | None:
    """Where the weights of `source` are on this machine, or None when they are not (offline view)."""
    name = source.name
    if source.kind == "open_clip":
        if name.startswith(LOCAL_DIR):
            folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
            ok = (folder / "open_clip_config.json").is_file() and any(
                any(folder.glob(p)) for p in ("*.safetensors", "*.bin", "*.pth")
            )
            return str(folder) if ok else None
        if name.startswith("hf-hub:"):
            return _hub_file(name.removeprefix("hf-hub:"), "open_clip_config.json")
        if not source.pretrained:
            return None
        if is_local(source.pretrained):
            return source.pretrained if Path(source.pretrained).expanduser().is_file() else None
        repo = _open_clip_tag_repo(name, source.pretrained)
        if repo is None:
            return None
        return next((f for f in (_hub_file(repo, w) for w in OPEN_CLIP_WEIGHT_FILES) if f), None)
    if is_local(name):
        path = Path(name).expanduser()
        return str(path) if (path / "config.json").is_file() else None
    config = _hub_file(name, "config.json")
    return str(Path(config).parent) if config else None


def missing_message(source: Source) -> str:
    """Why `source` cannot load offline, naming its key and the command that fetches it."""
    if source.kind == "open_clip" and source.name.startswith(LOCAL_DIR) and source.export is None:
        what = f"no open_clip folder (open_clip_config.json + weights) at '{source.name.removeprefix(LOCAL_DIR)}'"
        return f"`{source.key}`: {what}; point it at one, or at local-dir:<folder>/open_clip/<arch>/<tag> for `{FETCH_COMMAND}` to write"
    if source.kind != "open_clip" and is_local(source.name):
        return f"`{source.key}`: no config.json in '{source.name}' (a folder written by save_pretrained)"
    shown = f"{source.name} ({source.pretrained})" if source.pretrained else source.name
    return (
        f"`{source.key}`: the weights of {shown} are not on this machine and runs are offline "
        f"(HF_HUB_OFFLINE=1). Fetch them once, online: `{FETCH_COMMAND}`"
    )


def missing(params: Mapping[str, Any], skip: tuple[Path, ...] = ()) -> list[str]:
    """A message per source that is not here. Hub sources are only checked offline (online, the
    loaders download them); sources under a folder in `skip` (the pipeline writes it) are not checked."""
    problems = []
    for source in sources(params):
        path = source.name.removeprefix(LOCAL_DIR)
        if any(Path(path).resolve().is_relative_to(Path(s).resolve()) for s in skip):
            continue
        hub = not is_local(source.name) and not (source.kind == "open_clip" and is_local(source.pretrained))
        if hub and not offline():
            continue
        if locate(source) is None:
            problems.append(missing_message(source))
    return problems


def weights_fingerprint(name: str, pretrained: str = "") -> list[str]:
    """Content fingerprints of a model source (`name`, `pretrained` as the params give them).

    A local file or folder (`local-dir:` stripped) gets its content fingerprint; a hub name or tag
    names its weights and stays as it is. Work keyed by this is never reused with other weights at
    the same path.
    """
    return [path_fingerprint(name.removeprefix(LOCAL_DIR)), path_fingerprint(pretrained)]


def missing_weights(param: str, what: str) -> FileNotFoundError:
    """The error every loader raises when a model source cannot be loaded: it names the param to set."""
    return FileNotFoundError(
        f"{what}. Set `{param}` to a hub name whose weights are in the local cache (`{FETCH_COMMAND}` "
        f"fetches them, online), or to a local path that exists (e.g. `dvc exp run -S {param}=...`); "
        "for the demo's models run the `pretrain` stage."
    )


# -- transformers: a hub name or a save_pretrained folder --------------------------------------------


def from_pretrained(
    source: str,
    *,
    param: str,
    what: str,
    example: str,
    classes: Sequence[Any],
    model_types: Sequence[str] = (),
    **kwargs: Any,
) -> list[Any]:
    """`cls.from_pretrained(source, **kwargs)` for each of `classes` (e.g. a processor, then a model).

    A local folder must hold `config.json` and loads with `local_files_only`; anything else is a hub
    name, read from the cache when runs are offline. `what` names the model in the message ("the
    captioner"), `example` a hub name of its kind; `model_types`, when given, the `config.model_type`s
    the caller supports (checked on the last).
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
        loaded = [cls.from_pretrained(source, local_files_only=local_only, **kwargs) for cls in classes]
    except (OSError, ValueError, KeyError) as err:
        raise missing(err) from err
    model_type = getattr(getattr(loaded[-1], "config", None), "model_type", None)
    if model_types and model_type not in model_types:
        raise missing_weights(
            param,
            f"{what.capitalize()} '{source}' is a {model_type!r} model; supported: {', '.join(model_types)}",
        )
    return loaded


# -- open_clip: local-dir folders, architectures with a tag or a checkpoint, hf-hub ------------------


@dataclass
class OpenClipBundle:
    model: open_clip.CLIP
    tokenizer: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int


def tag_activation_is_quick_gelu(model: str, pretrained: str) -> bool:
    """Whether open_clip's pretrained tag `pretrained` of `model` was trained with QuickGELU.

    open_clip builds `ViT-B-16` with exact GELU whatever the tag; for the `openai` tag (which
    carries `quick_gelu=True`) it only logs a warning and runs the weights with the wrong
    activation. A checkpoint file or a `local-dir:` folder has no tag: there the architecture name
    (`ViT-B-16-quickgelu`) or the folder's `open_clip_config.json` decides, as in open_clip.
    """
    import open_clip

    if not pretrained or model.startswith((LOCAL_DIR, "hf-hub:")):
        return False
    return bool(open_clip.get_pretrained_cfg(model, pretrained).get("quick_gelu", False))


def uses_quick_gelu(clip: torch.nn.Module) -> bool:
    """Whether the MLPs of `clip` run QuickGELU (what the activation of a built model really is)."""
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in clip.modules())


def load_open_clip(
    model: str,
    pretrained: str = "",
    *,
    param: str,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
) -> OpenClipBundle:
    """Build an open_clip model with its weights, frozen and in eval mode.

    `model` is an open_clip architecture name (`ViT-B-16`, with `pretrained` a tag such as `openai`
    or a checkpoint file), `local-dir:/path` (a folder with `open_clip_config.json` and weights, as
    the demo writes) or `hf-hub:org/repo`. `param` is the params.yaml prefix (`attributes.clip`:
    keys `.model` and `.pretrained`; `model.backbone`: keys `.name` and `.pretrained`), so that each
    error names the one key to set.
    """
    import open_clip

    model_key = f"{param}.name" if param == "model.backbone" else f"{param}.model"
    if model.startswith(LOCAL_DIR):
        folder = Path(model[len(LOCAL_DIR) :])
        if not (folder / "open_clip_config.json").is_file():
            raise missing_weights(model_key, f"No open_clip_config.json in '{folder}'")
        if not any(folder.glob(pat) for pat in ("*.safetensors", "*.bin", "*.pth")):
            raise missing_weights(model_key, f"No weights file in '{folder}'")
        pretrained = ""
    elif not model.startswith("hf-hub:"):
        if not pretrained:
            raise missing_weights(f"{param}.pretrained", f"No weights given for open_clip model '{model}'")
        if ("/" in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)) and not Path(pretrained).is_file():
            raise missing_weights(f"{param}.pretrained", f"Checkpoint file '{pretrained}' does not exist")
    quick_gelu = tag_activation_is_quick_gelu(model, pretrained)
    try:
        clip = open_clip.create_model(
            model,
            pretrained=pretrained or None,
            device=device,
            require_pretrained=True,
            force_image_size=image_size,
            force_quick_gelu=quick_gelu,
        )
    except (RuntimeError, OSError, ValueError) as err:
        raise missing_weights(
            f"{param}.pretrained" if pretrained else model_key,
            f"Could not load open_clip model '{model}' (pretrained='{pretrained}'): {err}",
        ) from err
    clip.eval().requires_grad_(False)
    log.info(
        "%s: open_clip %s (pretrained=%r) with %s",
        param,
        model,
        pretrained,
        "QuickGELU" if uses_quick_gelu(clip) else "GELU",
    )
    cfg = clip.visual.preprocess_cfg
    size = cfg["size"]
    return OpenClipBundle(
        model=clip,
        tokenizer=open_clip.get_tokenizer(model),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        image_size=int(size if isinstance(size, int) else size[0]),
    )


def write_open_clip_folder(folder: str | Path, model: open_clip.CLIP, config: dict) -> str:
    """Write `open_clip_config.json` (`config`: model_cfg + preprocess_cfg) + `open_clip_model.safetensors`,
    open_clip's own local-dir format; return the `local-dir:` model name."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return f"{LOCAL_DIR}{folder}"
