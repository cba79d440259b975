"""Files written whole or not at all, files known by their content, and whether the network is off or unreachable.

Every file the project writes goes through `atomic`: it is written under a temporary name
beside its destination and renamed over it only when complete, so a killed or failed run
leaves the previous file whole (or none), never a half-written one.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renamed to `path` when the block ends without error,
    removed when it raises."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder must be: say so as the OS does for a path through a file
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path.parent)) from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_text(path: str | Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, indent: int | None = 2, newline: bool = True, sort_keys: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + ("\n" if newline else ""))


def save_npy(path: str | Path, array) -> None:
    """np.save, atomically (through a file: np.save would add .npy to the temporary name)."""
    import numpy as np

    with atomic(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def file_stat(path: str | Path) -> list[int]:
    """Size and mtime: a file whose stat is unchanged since it was hashed is trusted unhashed (as make and DVC do)."""
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def save_checkpoint(model, path: str | Path, extra: dict | None = None) -> None:
    """A module's state dict (and `extra`) with torch.save, atomically."""
    import torch  # here: most importers of this module never need torch

    with atomic(path) as tmp:
        open(tmp, "wb").close()  # a denied write is a PermissionError here, not torch's RuntimeError below
        try:
            # to a path, not a file object: torch names the archive inside after the file, so the bytes
            # (and the sha256 recorded of a backbone) stay those of every earlier run
            torch.save({"state_dict": model.state_dict(), **(extra or {})}, tmp)
        except RuntimeError as e:  # torch reports every failed write so
            raise write_error(path, e) from None


def write_error(path: str | Path, e: Exception):
    """The error to raise for a library's failed write of `path` (torch, faiss and polars each raise
    their own kind, without an errno): a full disk says so, anything else quotes the library."""
    from pipeline.core.errors import PipelineError

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        full = shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        full = False
    return PipelineError(f"cannot write {path}: {'the disk is full' if full else str(e)[:200]}")


def offline() -> bool:
    """HF_HUB_OFFLINE, read at call time: huggingface_hub reads it once, at import, and it may
    have been set since."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why `url`'s server cannot be reached now (its name does not resolve, the connection is refused
    or unanswered within `timeout` s), or None when a TCP connection opens. One connection, to the
    proxy where one is set: a dead network is then a fast error, where the Hugging Face client retries
    every file it looks for with back-off (a minute or more) before it gives up."""
    import socket
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:  # socket.gaierror, ConnectionRefusedError, TimeoutError, OSError(ENETUNREACH)
        return f"{host}:{port}: {e.strerror or type(e).__name__}"
    return None
