"""Passwords batchscore generates for its embedded servers, kept under ``BATCHSCORE_HOME``.

Each secret is one file in ``BATCHSCORE_HOME/secrets/`` (folder 0700, files
0600), created once with a random value and reused by every later command.
Two commands creating the same secret at once agree on one value.
"""

from __future__ import annotations

import os
import re
import secrets as random_secrets
import tempfile
from pathlib import Path

SECRET_BYTES = 24
SECRET_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")


def secrets_dir(home: Path) -> Path:
    return home / "secrets"


def secret(home: Path, name: str) -> str:
    """The secret ``name`` under ``home``, generated on first use."""
    if not SECRET_NAME.fullmatch(name):
        raise ValueError(f"a secret name is lower-case letters, digits and underscores; "
                         f"got {name!r}")
    folder = secrets_dir(home)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = folder / name
    if path.exists():
        return path.read_text().strip()
    # Written whole to a file of its own, then linked into place: linking fails
    # if another command got there first, and nobody ever reads a half-written file.
    fd, staged_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    staged = Path(staged_name)
    with os.fdopen(fd, "w") as handle:
        handle.write(random_secrets.token_urlsafe(SECRET_BYTES))
    try:
        os.link(staged, path)
    except FileExistsError:
        pass
    finally:
        staged.unlink()
    return path.read_text().strip()
