"""Fill one folder with everything a classroom needs offline, then copy it to every machine.

    python -m tools.mirror DIR [--gpt2 SIZE ...]

DIR receives three folders:

    DIR/data/        every data file the chapters read, verified by sha256     (DATA_MIRROR)
    DIR/tiktoken/    GPT-2's vocab.bpe and encoder.json under tiktoken's names (TIKTOKEN_CACHE_DIR)
    DIR/gpt2/<size>/ config.json + model.safetensors of each size asked for     (GPT2_DIR)

Files come from DATA_MIRROR when it is set (an existing mirror, a colleague's copy), else they are
downloaded; files already in DIR with the right sha256 are kept. GPT-2 sizes come from GPT2_DIR
when it holds them, else from the Hugging Face Hub (verified, through your Hugging Face cache).
At the end it prints the three `export` lines students set, and lists what it could not get
(exit status 1 when anything is missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ch02_data.download import DownloadError, download, sha256_of
from ch05_pretrain import gpt2_hub
from ch06_classify.data import _extract_sms
from tools.course_files import DATA_FILES, tiktoken_cache_names


def _copy(src: Path, dest: Path) -> None:
    """Copy `src` onto `dest` through a temporary file, so a half-copied file never has the final name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fill_data(root: Path) -> dict[str, str]:
    """Every data file into root/data, verified; returns {name: why} for those it could not get."""
    failed = {}
    for f in DATA_FILES:
        unpack = dict(unpack=_extract_sms, packed_name=f.packed_name) if f.packed_name else {}
        try:
            download(list(f.urls), root / "data" / f.name, f.sha256, retries=1, **unpack)
        except DownloadError as e:
            failed[f.name] = str(e).splitlines()[0]
    return failed


def fill_tiktoken(root: Path) -> dict[str, str]:
    """vocab.bpe and encoder.json from root/data into root/tiktoken under tiktoken's cache names."""
    failed = {}
    expected = {f.name: f.sha256 for f in DATA_FILES}
    for name, key in tiktoken_cache_names().items():
        src, dest = root / "data" / name, root / "tiktoken" / key
        if not src.is_file():
            failed[f"tiktoken's {name}"] = f"{name} is not in {root / 'data'}"
            continue
        if not (dest.is_file() and sha256_of(dest) == expected[name]):
            _copy(src, dest)
    return failed


def fill_gpt2(root: Path, sizes: list[str]) -> dict[str, str]:
    """Each GPT-2 size into root/gpt2/<size>/ in the GPT2_DIR layout; returns {size: why} for failures."""
    from tools.gpt2_standins import hf_config

    failed = {}
    for name in sizes:
        folder = root / "gpt2" / name
        local = gpt2_hub.local_folder(name)
        if local is not None and local.resolve() == folder.resolve():
            continue  # DIR/gpt2 is GPT2_DIR itself: nothing to copy
        try:
            weights = local / gpt2_hub.WEIGHTS_FILE if local is not None else gpt2_hub.download_from_hub(name)
        except gpt2_hub.GPT2Unavailable as e:
            failed[f"GPT-2 {name}"] = e.reason
            continue
        dest = folder / gpt2_hub.WEIGHTS_FILE
        if not (dest.is_file() and dest.stat().st_size == weights.stat().st_size):
            _copy(weights, dest)
        if local is not None:
            _copy(local / "config.json", folder / "config.json")
        else:
            hf_config(name).to_json_file(folder / "config.json")
    return failed


def env_lines(root: Path) -> list[str]:
    """The lines a student puts in their shell (or the teacher in the class image)."""
    root = root.resolve()
    return [f"export DATA_MIRROR={root / 'data'}", f"export TIKTOKEN_CACHE_DIR={root / 'tiktoken'}",
            f"export GPT2_DIR={root / 'gpt2'}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="the folder to fill (created if needed)")
    parser.add_argument("--gpt2", nargs="+", default=[], choices=gpt2_hub.GPT2_SIZES, metavar="SIZE",
                        help=f"GPT-2 sizes to include: {', '.join(gpt2_hub.GPT2_SIZES)} (default: none)")
    args = parser.parse_args(argv)
    root: Path = args.dir
    root.mkdir(parents=True, exist_ok=True)
    source = os.environ.get("DATA_MIRROR") or "the public URLs"
    print(f"Filling {root.resolve()} from {source}")
    failed = fill_data(root)
    failed |= fill_tiktoken(root)
    failed |= fill_gpt2(root, args.gpt2)
    got = [f.name for f in DATA_FILES if f.name not in failed]
    print(f"data: {len(got)} of {len(DATA_FILES)} files verified in {root / 'data'}")
    print(f"tiktoken: {2 - sum(k.startswith('tiktoken') for k in failed)} of 2 files in {root / 'tiktoken'}")
    if args.gpt2:
        print(f"GPT-2: {', '.join(s for s in args.gpt2 if f'GPT-2 {s}' not in failed) or 'none'} in {root / 'gpt2'}")
    print("\nStudents set (or put in the class image's shell profile):")
    for line in env_lines(root):
        print("  " + line)
    if failed:
        print("\nCould not get:")
        for what, why in failed.items():
            print(f"- {what}: {why}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
