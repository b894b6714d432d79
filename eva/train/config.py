"""What a training run is given: the `train` section (`TrainConfig`), the job the train stage assembles
(`TrainJob`) and what a run returns (`TrainResult`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eva.config import (
    BOOLEAN,
    check_fields,
    derived,
    integer,
    invalid,
    number,
    one_of,
    section_values,
    setting,
    value_at,
)
from eva.data.clips import CROPS, DECODE
from eva.methods import Recipe
from eva.models import ModelConfig, VideoClassifier
from eva.utils.ddp import NPROC


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section of params.yaml (the recipe: recipes.yaml `train.recipes.<model.method>`); a bad value names its key."""

    epochs: int = setting(default=8, rule=integer(1))
    batch_size: int = setting(
        default=16, rule=integer(1)
    )  # global batch per forward/backward, over all processes
    grad_accum: int = setting(default=1, rule=integer(1))
    # train.recipes.<model.method>: optimiser, lr, backbone_lr, weight decay (read by Recipe.from_params)
    recipe: Recipe = derived(default=Recipe())
    # Multiply a recipe's lr and backbone_lr, per optimiser. Real data: 1 (the published recipes). The
    # demo's CPU schedule is ~1,000 steps where the papers run tens of thousands (docs/demo.md).
    lr_scale_adamw: float = setting("lr_scale.adamw", default=10.0, rule=number(above=0))
    lr_scale_sgd: float = setting("lr_scale.sgd", default=1.0, rule=number(above=0))
    warmup_epochs: float = setting(default=1.0, rule=number(0))
    label_smoothing: float = setting(default=0.1, rule=number(0, below=1))  # AIM, VPT, AdaptFormer: 0
    # vpt: the prompt tokens get the recipe's weight decay too, as in VPT's SGD (it decays every tunable
    # tensor but the head's bias); false: prompts are free tensors, not decayed
    decay_prompts: bool = setting(default=False, rule=BOOLEAN)
    flip: bool = setting(default=False, rule=BOOLEAN)
    # random_resized: torchvision's RandomResizedCrop over `crop_scale` of the area | multi_scale: TSN's
    # GroupMultiScaleCrop (scales 1, .875, .75, .66 of the short side; the EVA authors' loader)
    crop: str = setting(default="random_resized", rule=one_of(*CROPS))
    crop_scale: tuple[float, float] = (0.7, 1.0)
    # torchvision RandAugment, one draw per clip: ops per clip (0: off) at magnitude 0..30 (AIM SSv2: 4, 7)
    rand_augment_ops: int = setting("rand_augment.ops", default=0, rule=integer(0, 14))
    rand_augment_magnitude: int = setting("rand_augment.magnitude", default=9, rule=integer(0, 30))
    # probability of erasing one rectangle of the clip to the mean colour (AIM SSv2: 0.25)
    random_erasing: float = setting(default=0.0, rule=number(0, 1))
    workers: int = setting(default=1, rule=integer(0, what="(DataLoader worker processes per rank)"))
    # cpu: loader workers decode and augment | device: they pick frames and draw the augmentations, the
    # main process decodes each batch on the model's device (nvJPEG on CUDA) and augments it there
    decode: str = setting(default="cpu", rule=DECODE)
    # validate after every N-th epoch and after the last (mmaction's `evaluation.interval`)
    val_interval: int = setting(default=2, rule=integer(1, what="(epochs between validations)"))
    amp: bool = setting(default=True, rule=BOOLEAN)
    # recompute each backbone layer in backward instead of keeping its activations (VideoClassifier.checkpointing)
    checkpointing: bool = setting(default=False, rule=BOOLEAN)
    # torch.compile the model (after DDP wraps it): a GPU speed option (docs/performance.md)
    compile: bool = setting(default=False, rule=BOOLEAN)
    seed: int = setting(default=0, rule=integer())
    nproc: int = setting(default=1, rule=NPROC)

    def __post_init__(self) -> None:
        check_fields(self, "train")
        if not isinstance(self.recipe, Recipe):
            object.__setattr__(self, "recipe", Recipe(**self.recipe))  # the JSON round trip of a checkpoint
        if self.warmup_epochs > self.epochs:
            raise invalid(
                "train.warmup_epochs",
                f"a number of epochs in 0..train.epochs ({self.epochs})",
                self.warmup_epochs,
            )
        scale = self.crop_scale
        if (
            not isinstance(scale, list | tuple)
            or len(scale) != 2
            or not all(number().ok(v) for v in scale)
            or not 0 < scale[0] <= scale[1] <= 1
        ):
            raise invalid("train.crop_scale", "[min, max] area fractions with 0 < min <= max <= 1", scale)
        object.__setattr__(self, "crop_scale", (float(scale[0]), float(scale[1])))

    @property
    def global_batch(self) -> int:
        """The batch of one forward/backward over the `nproc` processes: `batch_size`, or where `nproc`
        does not divide it, the next multiple of `nproc` (each process takes an equal share)."""
        return -(-self.batch_size // self.nproc) * self.nproc

    @property
    def scaled_recipe(self) -> Recipe:
        """The recipe the optimiser runs: `recipe` with its lrs times `train.lr_scale.<optimizer>`, and
        times `global_batch / batch_size` where the batch was rounded up (the linear scaling rule,
        Goyal et al. 2017; mmengine's `auto_scale_lr`): 1 whenever `nproc` divides the batch."""
        factor = getattr(self, f"lr_scale_{self.recipe.optimizer}") * (self.global_batch / self.batch_size)
        return self.recipe.scaled(factor)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        """From the whole params.yaml dict: `train.<name>`, and the recipe of `model.method`."""
        values = section_values(cls, params, "train", opaque=("recipes",))
        return cls(**values, recipe=Recipe.from_params(params, value_at(params, "model.method")))


@dataclass
class TrainJob:
    """Everything one training run reads and writes (the stage fills it from params.yaml)."""

    model: ModelConfig
    train: TrainConfig
    stage: int
    classes: list[str]
    train_shards: list[str]
    val_shards: list[str]
    train_attributes: Path | None  # attributes/train.parquet (None: no attribute file)
    val_attributes: Path | None
    output: Path  # models/trained/model.pt
    params: dict[str, Any] = field(default_factory=dict)  # recorded in model.pt
    checkpoint_root: Path | None = Path("checkpoints")  # None: no resume file
    live_dir: Path | None = Path("dvclive/train")  # None: no DVCLive logging


@dataclass
class TrainResult:
    model: VideoClassifier
    history: list[dict[str, float]]  # one record per epoch
    steps: list[dict[str, float]]  # one record per optimiser step
    resumed_from: int  # finished epochs found in the resume file (0: fresh start)
