"""`python -m eva.weights fetch | check`: the pretrained weights a params.yaml names, fetched once while
online, then found offline.

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
same test before any stage starts, and names the param key and this module's fetch command. Finding
and loading weights is `eva.weights_io`'s; this module only adds the command and the downloads.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from eva.config import load_params
from eva.weights_io import (
    LOCAL_DIR,
    Source,
    is_local,
    locate,
    missing_message,
    sources,
    tag_activation_is_quick_gelu,
    write_open_clip_folder,
)

log = logging.getLogger(__name__)


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
