"""Write stand-in GPT-2 weights: GPT-2's exact shapes, random values, in the `GPT2_DIR` layout.

    python -m tools.gpt2_standins DIR [--sizes gpt2 gpt2-medium] [--sparse]

OpenAI's weights cannot be downloaded on a machine without internet, yet every notebook's GPT-2
branch should run somewhere before a reader runs it. This writes `DIR/<size>/config.json` and
`DIR/<size>/model.safetensors` as transformers' `save_pretrained` writes them, from a randomly
initialised `GPT2LMHeadModel`: `GPT2_DIR=DIR` then makes every chapter take its GPT-2 branch, with
the real shapes, memory and time, and text that means nothing. The tests do exactly this.

`--sparse` writes the file's header with the exact tensor names and shapes but leaves the data a
sparse run of zeros (no disk space, written in a second): for the two largest sizes, whose random
initialisation and 3-6 GB of writing would only test the same code more slowly.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import warnings
from pathlib import Path

import torch

from ch04_gpt import GPT_CONFIGS

SIZES = tuple(GPT_CONFIGS)


def hf_config(name: str):
    """transformers' GPT2Config for size `name` (vocabulary 50,257, context 1,024)."""
    from transformers import GPT2Config

    cfg = GPT_CONFIGS[name]
    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                      n_layer=cfg.n_layers, n_head=cfg.n_heads)


def write_standin(root: str | Path, name: str, *, sparse: bool = False, seed: int = 0) -> Path:
    """Write the stand-in for size `name` into `root/name/` and return that folder."""
    if name not in GPT_CONFIGS:
        raise ValueError(f"name={name!r} is not a GPT-2 size; use one of {', '.join(SIZES)}")
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(name)
    if not sparse:
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GPT2LMHeadModel(config).save_pretrained(folder)  # config.json + model.safetensors
        return folder
    with torch.device("meta"):  # names and shapes only, no memory
        model = GPT2LMHeadModel(config)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key, shape in shapes.items():
        size = 4 * int(torch.Size(shape).numel())  # float32
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)  # the data: a hole the file system reads as zeros
    config.to_json_file(folder / "config.json")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write stand-in GPT-2 weights in the GPT2_DIR layout.")
    parser.add_argument("dir", help="the folder to use as GPT2_DIR")
    parser.add_argument("--sizes", nargs="+", default=["gpt2"], choices=SIZES)
    parser.add_argument("--sparse", action="store_true", help="zeros in a sparse file instead of random values")
    args = parser.parse_args(argv)
    for name in args.sizes:
        print(f"wrote {write_standin(args.dir, name, sparse=args.sparse)}", file=sys.stderr)
    print(f"GPT2_DIR={Path(args.dir).resolve()}")


if __name__ == "__main__":
    main()
