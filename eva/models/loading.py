"""Load frozen pretrained models from a hub name or a local path, the same way for real and demo weights.

Every loader takes the params.yaml key it was configured by, so a missing checkpoint fails fast
with a message that says which param to set, instead of a hub time-out deep inside a library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import QuickGELU

from eva.utils.fingerprint import path_fingerprint
from eva.weights import FETCH_COMMAND, LOCAL_DIR

log = logging.getLogger(__name__)


def weights_fingerprint(name: str, pretrained: str = "") -> list[str]:
    """Content fingerprints of a model source (`name`, `pretrained` as the params give them).

    A local file or folder (`local-dir:` stripped) gets its content fingerprint; a hub name or tag
    names its weights and stays as it is. Work keyed by this is never reused with other weights at
    the same path.
    """
    return [path_fingerprint(name.removeprefix(LOCAL_DIR)), path_fingerprint(pretrained)]


@dataclass
class OpenClipBundle:
    model: open_clip.CLIP
    tokenizer: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int


def missing_weights(param: str, what: str) -> FileNotFoundError:
    """The error every loader raises when a model source cannot be loaded: it names the param to set."""
    return FileNotFoundError(
        f"{what}. Set `{param}` to a hub name whose weights are in the local cache (`{FETCH_COMMAND}` "
        f"fetches them, online), or to a local path that exists (e.g. `dvc exp run -S {param}=...`); "
        "for the demo's models run the `pretrain` stage."
    )


def tag_activation_is_quick_gelu(model: str, pretrained: str) -> bool:
    """Whether open_clip's pretrained tag `pretrained` of `model` was trained with QuickGELU.

    open_clip builds `ViT-B-16` with exact GELU whatever the tag; for the `openai` tag (which
    carries `quick_gelu=True`) it only logs a warning and runs the weights with the wrong
    activation. A checkpoint file or a `local-dir:` folder has no tag: there the architecture name
    (`ViT-B-16-quickgelu`) or the folder's `open_clip_config.json` decides, as in open_clip.
    """
    if not pretrained or model.startswith((LOCAL_DIR, "hf-hub:")):
        return False
    return bool(open_clip.get_pretrained_cfg(model, pretrained).get("quick_gelu", False))


def uses_quick_gelu(clip: torch.nn.Module) -> bool:
    """Whether the MLPs of `clip` run QuickGELU (what the activation of a built model really is)."""
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
        if ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))) and not Path(
            pretrained
        ).is_file():
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


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; anything else is passed to torch as-is."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
