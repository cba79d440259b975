"""Image–caption pairs from webdataset shards: tar files whose members are grouped into samples
by key (the member's path up to the first dot of its file name: `0001.jpg`, `0001.txt`,
`0001.json` are sample `0001`).

A sample's image is its member with an image extension; its caption is its `.txt`, or else
the `caption_field` of its `.json` (a caption or a list of captions). Images are written to
`into/<shard>/<n><ext>`, named by position, never by the member's name (a name like
`../x.jpg` cannot escape `into`). A sample without an image or a caption is skipped and
counted; a file that is not a tar archive is an error naming it, and so is a member larger than
a caption (MAX_TEXT_BYTES) or an image (MAX_IMAGE_BYTES) can be: a gzipped shard of a few MB can
unpack to gigabytes, and a member is read whole.
"""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from pipeline.core.errors import PipelineError, quoted

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_TEXT_BYTES = 1 << 20  # a .txt or .json member (a caption and its metadata are a few KB)
MAX_IMAGE_BYTES = 256 << 20  # an image member (a 100-megapixel JPEG is ~30 MB)


def shard_files(path: Path) -> list[Path]:
    """The shards a `pairs.path` names: one .tar file, or every .tar of a folder, sorted."""
    shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    if not shards:
        raise PipelineError(f"pairs.path {path}: a folder with no .tar shards")
    return shards


def _samples(shard: Path) -> dict[str, dict[str, tarfile.TarInfo]]:
    """{key: {extension: member}} of one shard, in the shard's order."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                name = PurePosixPath(member.name)
                stem, dot, ext = name.name.partition(".")
                if dot:
                    samples.setdefault(str(name.parent / stem), {}).setdefault("." + ext.lower(), member)
    except (tarfile.TarError, OSError) as e:
        raise PipelineError(f"{shard} is not a readable tar shard ({str(e)[:200]})") from None
    return samples


def _member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, shard: Path):
    """The member's file object, once its size (from its header: nothing is read yet) is within `limit`."""
    if member.size > limit:
        raise PipelineError(f"{shard}: member {quoted(member.name)} is {member.size:,} bytes; a "
                            f"{PurePosixPath(member.name).suffix or 'member'} may be at most {limit:,} bytes: "
                            "the shard is damaged or not a webdataset shard")
    return tar.extractfile(member)


def _caption(tar: tarfile.TarFile, files: dict, caption_field: str, where: str, shard: Path) -> list[str] | None:
    if ".txt" in files:
        return [_member(tar, files[".txt"], MAX_TEXT_BYTES, shard).read().decode("utf-8", errors="replace").strip()]
    if ".json" not in files:
        return None
    try:
        value = json.loads(_member(tar, files[".json"], MAX_TEXT_BYTES, shard).read()).get(caption_field)
    except (ValueError, AttributeError):
        raise PipelineError(f"{where}.json is not a JSON object") from None
    except RecursionError:
        raise PipelineError(f"{where}.json is nested too deeply to be a caption's metadata") from None
    texts = [value] if isinstance(value, str) else value
    if texts is None:
        return None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise PipelineError(f"{where}.json: {caption_field!r} must be a caption or a list of captions, "
                            f"got {quoted(value)}")
    return texts


def read_shards(path: Path, caption_field: str, into: Path) -> tuple[list[Path], list[list[str]], int]:
    """(image paths written under `into`, captions of each image, samples skipped)."""
    images, captions, skipped = [], [], 0
    for shard in shard_files(path):
        samples = _samples(shard)
        folder = into / shard.stem
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(shard) as tar:
            for key, files in samples.items():
                image = next((e for e in IMAGE_EXTENSIONS if e in files), None)
                texts = _caption(tar, files, caption_field, f"{shard} sample {key!r}", shard)
                if image is None or not texts or not any(t.strip() for t in texts):
                    skipped += 1
                    continue
                out = folder / f"{len(images):08d}{image}"
                with _member(tar, files[image], MAX_IMAGE_BYTES, shard) as source, open(out, "wb") as target:
                    shutil.copyfileobj(source, target)  # in blocks, not whole
                images.append(out)
                captions.append(texts)
    if not images:
        raise PipelineError(f"pairs.path {path}: no sample has both an image ({', '.join(IMAGE_EXTENSIONS)}) and "
                            f"a caption (.txt, or {caption_field!r} in .json); {skipped} skipped")
    return images, captions, skipped
