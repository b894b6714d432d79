"""The optimiser a recipe builds: parameter groups over the tunable tensors (lr and weight decay per
group), and the tunable tensors a forward leaves without a gradient (DDP must know them)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from eva.methods import Recipe
from eva.models import VideoClassifier
from eva.models.tokens import DeepPrompts

# Only the weight matrices of these layers get weight decay; biases, norms, embeddings, prompts (unless
# `train.decay_prompts`), attribute-token offsets and other free tensors do not.
DECAYED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)


def param_groups(
    model: VideoClassifier, recipe: Recipe, *, decay_prompts: bool = False
) -> list[dict[str, Any]]:
    """AdamW/SGD groups over the tunable tensors only, new parameters first (their lr is the one logged).

    New parameters train at `recipe.lr`, pretrained backbone weights (trainable only under `full`)
    at `recipe.backbone_lr`; weight decay on layer weight matrices, none on biases, norms and free
    tensors, except VPT's prompt tokens with `decay_prompts` (`train.decay_prompts`).
    """
    tunable = {id(p) for _, p in model.named_tunable_parameters()}
    in_backbone = {id(p) for p in model.backbone.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (False, True): [], (False, False): [], (True, True): [], (True, False): []
    }  # (backbone, decay) -> tensors  # fmt: skip
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) not in tunable or id(p) in seen:
                continue
            seen.add(id(p))
            decay = isinstance(module, DECAYED_LAYERS) and p.ndim >= 2
            decay = decay or (decay_prompts and isinstance(module, DeepPrompts))
            groups[(id(p) in in_backbone, decay)].append(p)
    return [
        {
            "params": params,
            "lr": recipe.backbone_lr if backbone else recipe.lr,
            "weight_decay": recipe.weight_decay if decay else 0.0,
        }
        for (backbone, decay), params in groups.items()
        if params
    ]


def build_optimizer(
    model: VideoClassifier, recipe: Recipe, *, decay_prompts: bool = False
) -> torch.optim.Optimizer:
    """The recipe's optimiser over `param_groups` (each group carries its own lr)."""
    groups = param_groups(model, recipe, decay_prompts=decay_prompts)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    on_cuda = all(p.is_cuda for group in groups for p in group["params"])
    # fused: one kernel for the whole update on CUDA; on the CPU torch's default (foreach) path, whose
    # results the committed runs hold
    return torch.optim.AdamW(groups, lr=recipe.lr, eps=recipe.eps, fused=True if on_cuda else None)


def unused_tunable_parameters(model: VideoClassifier, device: torch.device) -> list[str]:
    """Tunable tensors that get no gradient from a forward/backward (DDP must be told about them).

    Probed on one all-zero video in eval mode (no dropout, so no RNG is consumed).
    """
    cfg = model.config
    video = torch.zeros(1, cfg.frames, 3, cfg.image_size, cfg.image_size, device=device)  # [1, T, 3, S, S]
    attributes = {
        name: torch.zeros(1, cfg.attribute_layers[name], cfg.attribute_dim, device=device)  # [1, L, D]
        for name in cfg.attributes
    }
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        model(video, attributes or None).sum().backward()
    unused = [name for name, p in model.named_tunable_parameters() if p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return unused
