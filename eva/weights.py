"""The pretrained weights a params.yaml names: fetched once while online, then found offline.

Pipeline stages run offline (`stages/__init__.py` sets `HF_HUB_OFFLINE=1` unless the user set it), so
a run never waits on a hub. `python -m eva.weights fetch` is the one step that goes online: it
downloads what the current params name and is a no-op for what is already here.

Where each kind of source lives:
- a transformers model named by hub id (`Salesforce/blip-image-captioning-base`,
  `MCG-NJU/videomae-base`, ...): the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`), as
  `from_pretrained` finds it;
- an open_clip model named `local-dir:<folder>/open_clip/<arch>/<tag>` (what the presets use): fetch
  builds open_clip's `<arch>` with its pretrained `<tag>` and writes it into that folder in open_clip's
  own local-dir format (`open_clip_config.json` + `open_clip_model.safetensors`), with the tag's
  activation (QuickGELU for `openai`) written into the config, so loading needs no tag registry;
- an open_clip architecture with a tag (`ViT-B-16` + `openai`): open_clip's download into the cache;
- any other local path: the user's own files; fetch only says whether they exist.

`python -m eva.weights check` lists every source with where it was found; the `check` stage runs the
same test before any stage starts, and names the param key and this module's fetch command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva.config import load_params, value_at

LOCAL_DIR = "local-dir:"  # open_clip's schema for a model folder (this module loads no torch at import)
FETCH_COMMAND = "python -m eva.weights fetch"
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

log = logging.getLogger(__name__)


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


def _value(params: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """`value_at`, or `default` where the key is missing (the check stage names missing keys itself)."""
    try:
        return value_at(params, dotted)
    except KeyError:
        return default


def sources(params: Mapping[str, Any]) -> list[Source]:
    """Every model source the params name for the stages that will run, once each (first key wins)."""
    found = [
        Source(
            "attributes.clip.model",
            "open_clip",
            _value(params, "attributes.clip.model", ""),
            _value(params, "attributes.clip.pretrained", "") or "",
        ),
        Source("attributes.captioner", "transformers", _value(params, "attributes.captioner", "")),
    ]
    if _value(params, "attributes.label.method", "clip") == "detector":
        found.append(
            Source(
                "attributes.label.detector", "transformers", _value(params, "attributes.label.detector", "")
            )
        )
    if _value(params, "attributes.mask.method", "median") == "model":
        found.append(
            Source("attributes.mask.model", "transformers", _value(params, "attributes.mask.model", ""))
        )
    family = _value(params, "model.backbone.family", "open_clip")
    found.append(
        Source(
            "model.backbone.name",
            "open_clip" if family == "open_clip" else "transformers",
            _value(params, "model.backbone.name", ""),
            (_value(params, "model.backbone.pretrained", "") or "") if family == "open_clip" else "",
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


# -- fetching (online) ------------------------------------------------------------------------------


def _fetch_transformers(repo_id: str) -> str:
    """Download a transformers repo into the HF cache: configs, tokenizer files and one weights format."""
    from huggingface_hub import HfApi, snapshot_download

    files = HfApi().list_repo_files(repo_id)
    weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
    return snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.model", *weights])


def export_open_clip(arch: str, tag: str, folder: Path) -> str:
    """Build open_clip `arch` with pretrained `tag` (downloaded into the cache by open_clip) and write
    it to `folder` in the local-dir format, the tag's activation and preprocessing in its config."""
    import open_clip

    from eva.models.loading import tag_activation_is_quick_gelu
    from eva.models.tiny import write_open_clip_folder

    quick_gelu = tag_activation_is_quick_gelu(arch, tag)
    model = open_clip.create_model(arch, pretrained=tag, require_pretrained=True, force_quick_gelu=quick_gelu)
    model_cfg = dict(open_clip.get_model_config(arch))
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    preprocess = dict(model.visual.preprocess_cfg)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess.items()},
    }
    return write_open_clip_folder(folder, model, config)


def fetch(source: Source) -> str:
    """Make `source` available offline; return where it now is. Needs the network for hub sources."""
    if (here := locate(source)) is not None:
        return here
    if source.export is not None:
        arch, tag = source.export
        return export_open_clip(arch, tag, Path(source.name.removeprefix(LOCAL_DIR)).expanduser())
    if source.kind == "open_clip":
        if source.name.startswith("hf-hub:"):
            from huggingface_hub import snapshot_download

            return snapshot_download(source.name.removeprefix("hf-hub:"))
        import open_clip

        open_clip.create_model(source.name, pretrained=source.pretrained, require_pretrained=True)
        return locate(source) or source.pretrained
    if is_local(source.name):
        raise FileNotFoundError(missing_message(source))
    return _fetch_transformers(source.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command",
        choices=("fetch", "check"),
        help="fetch: download what is missing (online); check: list, offline",
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_params(args.params)
    failed = 0
    for source in sources(params):
        label = f"{source.key:28s} {source.name}" + (f" ({source.pretrained})" if source.pretrained else "")
        try:
            where = fetch(source) if args.command == "fetch" else locate(source)
        except Exception as err:  # one failed download must not hide the others' status
            where, detail = None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        else:
            detail = missing_message(source)
        if where is None:
            failed += 1
            print(f"missing  {label}\n         {detail}")
        else:
            print(f"ok       {label}\n         {where}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "fetch":
        os.environ["HF_HUB_OFFLINE"] = "0"  # the one step that goes online (read at huggingface_hub's import)
        os.environ["TRANSFORMERS_OFFLINE"] = "0"
    sys.exit(main())
