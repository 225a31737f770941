"""Blocks of BENCHMARKS.md that scripts other than `make bench` write (the soak): replace one, keep them all.

`make bench` rewrites the whole file from its own measurements; a block between `<!-- name -->` and
`<!-- /name -->` comes from a run that takes far longer (30 minutes of soak), so bench carries it over.
"""

from __future__ import annotations

import re
from pathlib import Path

BLOCK_RE = re.compile(r"<!-- (?P<name>[a-z-]+) -->\n.*?<!-- /(?P=name) -->\n", re.S)


def kept_blocks(path: Path) -> str:
    """Every block in the file as it is now ("" when none), to append to a rewritten file."""
    if not path.is_file():
        return ""
    blocks = [m.group(0) for m in BLOCK_RE.finditer(path.read_text())]
    return "".join(f"\n{block}" for block in blocks)


def replace_block(path: Path, name: str, body: str) -> None:
    """Put `body` into the block `name`, in place of its last content, or at the end of the file."""
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->\n"
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(rf"<!-- {re.escape(name)} -->\n.*?<!-- /{re.escape(name)} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
