"""Clean reference clips for cloning engines, stored by content under the data directory.

An engine reads its reference from here, never from a profile's own folder, so deleting a profile
while a request still uses it loses nothing; identical clips are stored once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

KEPT_REFERENCES = 500


class ReferenceCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def store(self, wav: bytes) -> Path:
        """The path of a WAV holding ``wav`` (written atomically once, then reused)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{hashlib.sha256(wav).hexdigest()}.wav"
        if path.exists():
            path.touch()  # recently used: kept longest
            return path
        descriptor, temporary = tempfile.mkstemp(dir=self.root, suffix=".part")
        with os.fdopen(descriptor, "wb") as file:
            file.write(wav)
        os.replace(temporary, path)
        self._prune()
        return path

    def _prune(self) -> None:
        clips = sorted(self.root.glob("*.wav"), key=lambda clip: clip.stat().st_mtime, reverse=True)
        for old in clips[KEPT_REFERENCES:]:
            old.unlink(missing_ok=True)
