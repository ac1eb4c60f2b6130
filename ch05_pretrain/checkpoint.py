"""Saving and loading checkpoints that carry their own config.

A checkpoint is a plain dict `{"model": state_dict, "config": cfg.to_dict(), "optimizer": ...,
**extra}` holding only tensors, dicts, lists, tuples, numbers, strings and None. That is exactly
what `torch.load(..., weights_only=True)` accepts, so loading never runs code from the file
(pickles can), and the next chapter rebuilds the model from the file alone. `save_checkpoint`
refuses anything else before it writes, so no file is ever written that could not be loaded.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from ch04_gpt import GPTConfig, GPTModel

from .device import unwrap

# What weights_only loading accepts on every PyTorch we support (>= 2.4), by exact type: the
# loader refuses a str or float subclass (torch.__version__, np.float64), so we do too. dtype,
# device and Size may sit in a state_dict. A set is refused: older PyTorch cannot load it.
_PLAIN = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_ALLOWED = "tensors, dicts, lists, tuples, int, float, bool, str, bytes and None"
# A temporary file named like ours, last written before this process imported this module,
# is the remnant of a killed save.
_SESSION_START = time.time()


def _check_storable(value, where: str) -> None:
    """Raise TypeError naming `where` if `value` holds anything weights_only loading refuses."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if type(value) in (dict, OrderedDict):  # a state_dict is an OrderedDict
        for k, v in value.items():
            _check_storable(k, f"a key of {where}")
            _check_storable(v, f"{where}[{k!r}]")
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_storable(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"save_checkpoint: {where} is a {type(value).__module__}.{type(value).__qualname__} "
        f"({value!r:.60}); store only {_ALLOWED} (what weights_only loading accepts on every "
        "PyTorch version), e.g. str(path), sorted(a_set) or float(x)"
    )


def _write_problem(path: Path, text: str) -> OSError | None:
    """What saving a file at `path` (given as `text`) would run into, as the error to raise, its
    message the reason alone ("runs is a file, not a folder"); None when the file can be saved.

    Saving creates missing folders, so the nearest folder that exists must be a writable folder.
    Creating (and removing) a temporary file there is the one test that also catches read-only
    mounts and access-control lists, where permission bits alone mislead.
    """
    folder = path.parent
    try:
        if text.endswith(("/", os.sep)) or path.is_dir():  # Path() drops a trailing slash
            return IsADirectoryError(f"{text} is a folder")
        while not folder.exists() and folder != folder.parent:  # saving creates these
            folder = folder.parent
        if not folder.is_dir():
            return NotADirectoryError(f"{folder} is a file, not a folder")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=path.name + ".tmp")
    except OSError as e:
        return PermissionError(f"{folder} is not a writable folder ({e.strerror or e})")
    os.close(fd)
    os.unlink(probe)
    return None


def unwritable_reason(path: str | os.PathLike) -> str | None:
    """Why no file could be saved at `path` ("runs is a file, not a folder"), or None when one
    could; for checks before long work that warn rather than raise. Leaves nothing behind."""
    problem = _write_problem(Path(path), os.fspath(path))
    return None if problem is None else str(problem)


def check_checkpoint_path(path: str | os.PathLike, name: str = "checkpoint_path") -> Path:
    """Make sure a file can be written to `path`, before hours of training depend on it.

    Refuses a folder (also a name ending in "/"), a path under a file and a folder that cannot
    be written to (`unwritable_reason`), each with one sentence naming the argument: `name` is a
    keyword (checkpoint_path='runs/') or a command-line flag (--checkpoint 'runs/'). Creates
    nothing; returns the path. `train` calls it before its first step, `save_checkpoint` before
    it writes.

    Raises:
        IsADirectoryError, NotADirectoryError, PermissionError: as described above.
    """
    text, path = os.fspath(path), Path(path)
    problem = _write_problem(path, text)
    if problem is None:
        return path
    flag = name.startswith("-")
    label = f"{name} {text!r}" if flag else f"{name}={text!r}"
    if isinstance(problem, IsADirectoryError):
        verb = "is" if path.is_dir() and not flag else "names"  # a flag's text names a folder
        raise IsADirectoryError(f"{label} {verb} a folder; give a file name inside it, e.g. "
                                f"{str(path / 'checkpoint.pt')!r}")
    raise type(problem)(f"{label} cannot be written: {problem}; give a file in a writable folder")


def _remove_stale_temp_files(path: Path) -> None:
    """Delete `<name>.tmp*` files that a save killed mid-write left behind.

    Only our own naming, and only files last written before this process imported this module,
    so a save in progress elsewhere (its file is being written now) is left alone, as are files
    we cannot delete.
    """
    prefix = path.name + ".tmp"
    for p in path.parent.iterdir():
        try:
            if p.name.startswith(prefix) and p.is_file() and p.stat().st_mtime < _SESSION_START:
                p.unlink()
        except OSError:
            pass


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    **extra,
) -> Path:
    """Write `{"model", "config", "optimizer", **extra}` to `path` atomically and return the path.

    `model` may be wrapped (DDP, torch.compile): the unwrapped module's state_dict is saved, so
    its keys carry no `module.` or `_orig_mod.` prefix. "config" is `model.cfg.to_dict()` when the
    model has a config (GPTModel does), else None. The file is written to a temporary name in the
    same folder and then renamed, so a crash mid-write never leaves a truncated checkpoint; the
    temporary file of a save killed in an earlier process is removed on the next save.

    Raises:
        TypeError: before writing, when `extra` (or a state_dict) holds a value that
            `load_checkpoint` would refuse: anything but tensors, dicts, lists, tuples, int,
            float, bool, str, bytes and None. Convert it yourself (a Path to str, a set to a
            sorted list, an np.float64 to float); silently converting would change what you
            read back.
        IsADirectoryError, NotADirectoryError, PermissionError: before writing, when `path` is
            a folder, lies under a file or is in a folder that cannot be written to.
    """
    path = check_checkpoint_path(path, "path")
    model = unwrap(model)
    cfg = getattr(model, "cfg", None)
    state = {
        "model": model.state_dict(),
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        **extra,
    }
    for key, value in state.items():
        _check_storable(value, key if key in ("model", "config", "optimizer") else f"extra {key!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic on the same file system
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint dict with `weights_only=True`, mapping tensors onto `device`.

    Files holding anything other than tensors and plain Python containers/values are refused
    with an `UnpicklingError` instead of being executed.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is empty, not a PyTorch file (text, JSON, ...), damaged or
            truncated, or holds something other than a checkpoint dict with a "model" entry.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "no checkpoint at this path", str(path))
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; load_checkpoint expects a file "
                                "written by save_checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive ("PK\3\4"); files from before PyTorch 1.6 are a pickle (\x80).
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        what = "empty" if not head else f"not a PyTorch file (it starts with {head!r})"
        raise ValueError(f"{str(path)!r} is {what}; load_checkpoint expects a file written by "
                         "save_checkpoint (torch.save)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        # The zip reader's errors: a truncated or damaged archive. Others (a CUDA map_location
        # on a machine without CUDA, say) are not about the file and pass unchanged.
        if isinstance(e, RuntimeError) and not any(
            s in reason for s in ("zip", "PytorchStreamReader", "inline_container", "archive")
        ):
            raise
        raise ValueError(f"{str(path)!r} cannot be read as a checkpoint: it is damaged, "
                         f"truncated or another kind of zip file ({reason[:80]})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        what = f"a {type(ckpt).__name__}"
        if isinstance(ckpt, dict):
            what = f"a dict with keys {sorted(map(str, ckpt))[:5]}"
        raise ValueError(f"{str(path)!r} holds {what}, not a checkpoint; load_checkpoint expects "
                         "a dict with a 'model' entry, as save_checkpoint writes (read other "
                         "files with torch.load(path, weights_only=True))")
    return ckpt


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> GPTModel:
    """Rebuild a `GPTModel` from the config stored in a checkpoint, load its weights and
    return it in eval mode on `device`."""
    ckpt = load_checkpoint(path, device)
    if ckpt.get("config") is None:
        raise ValueError(f"{path} holds no model config; load its state_dict into a model yourself")
    if "num_classes" in ckpt:  # save_classifier's file: its head has classes, not the vocabulary
        raise ValueError(f"{str(path)!r} is a classifier ({ckpt['num_classes']} classes, written by "
                         "save_classifier), not a language model; load it with "
                         "ch06_classify.load_classifier")
    model = GPTModel(GPTConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
