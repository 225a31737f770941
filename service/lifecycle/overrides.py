"""Runtime overrides of the version policies (the v2 model repository's load and unload), kept in a small
JSON file that every worker's watcher reads, so a call answered by one worker reaches all of them.

{"cnn": {"versions": ["2"]}, "softmax": {"unloaded": true}}: cnn pinned to version 2, softmax unloaded;
a model not named follows its policy. Written whole to a temporary file and renamed, so a reader never sees
half of it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Override:
    """`versions` pins the model to those versions; `unloaded` takes it out of service."""

    versions: tuple[str, ...] = ()
    unloaded: bool = False


class Overrides:
    """The overrides file: read at every refresh, written by `set`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Override]:
        try:
            raw: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:  # a broken file must not stop the watcher
            log.warning("ignoring the model overrides file %s: %s", self.path, exc)
            return {}
        if not isinstance(raw, dict):
            return {}
        return {
            str(name): Override(tuple(str(v) for v in entry.get("versions", ())), bool(entry.get("unloaded")))
            for name, entry in raw.items()
            if isinstance(entry, dict)
        }

    def set(self, model: str, override: Override | None) -> None:
        """Replace `model`'s override (None: back to its policy)."""
        current = self.read()
        if override is None:
            current.pop(model, None)
        else:
            current[model] = override
        document = {
            name: ({"unloaded": True} if o.unloaded else {"versions": list(o.versions)})
            for name, o in sorted(current.items())
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, self.path)
