"""Model artifacts on disk: where they are and a checksum of what is there."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def artifact_path(uri: str) -> Path:
    """The local path of a ``file://`` artifact URI."""
    return Path(uri.removeprefix("file://"))


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, in order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def artifact_record(kind: str, path: Path) -> dict[str, Any]:
    """What the registry keeps of an artifact: kind, URI, checksum and size."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return {"kind": kind, "uri": path.absolute().as_uri(), "sha256": sha256_of(path),
            "bytes": sum(file.stat().st_size for file in files)}
