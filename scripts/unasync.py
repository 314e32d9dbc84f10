"""Write the blocking client, voxserve/client/_sync.py, from the async one, _async.py.

    python scripts/unasync.py          # write _sync.py
    python scripts/unasync.py --check  # exit 1, printing the diff, if _sync.py is not what it makes

The client is written once, async; the blocking one is the same code without ``await``, made by
the token replacements below (as httpcore makes its sync code). What truly differs (a task or a
thread, asyncio's timeouts or websockets') lives in _io_async.py and _io_sync.py under the same
names, so this script has nothing to understand: if it leaves an ``async``, an ``await`` or
``asyncio`` in its output, the source is no longer convertible and it says so.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parent.parent / "voxserve" / "client"
SOURCE = CLIENT / "_async.py"
TARGET = CLIENT / "_sync.py"

HEADER = """\
# Generated from _async.py by scripts/unasync.py: do not edit. Change _async.py, then run
# `python scripts/unasync.py` (`make unasync`); tests/test_unasync.py checks that they match.
"""
DOCSTRING = '''\
"""The blocking client: httpx for HTTP, websockets' threading client for the WebSocket APIs.

Made from `_async.py`, the client's one source, by scripts/unasync.py.
"""
'''

# In order: the keywords first, then names, each a whole word.
REPLACEMENTS = [
    (r"\basync (def|with|for)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\bAsync(?=[A-Z])", ""),  # AsyncClient, AsyncIterator, AsyncSpeechStream...
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\b__a(enter|exit|iter|next)__\b", r"__\1__"),
    (r"\ba(close|closing|read|next)\b", r"\1"),
    (r"\baiter_bytes\b", "iter_bytes"),
    (r"\bvoxserve\.client\._io_async\b", "voxserve.client._io_sync"),
    # What ``async for`` must spell out: ``for x in y: yield x`` is ``yield from y``.
    (r"^( *)for (\w+) in (.+):\n\1    yield \2$", r"\1yield from \3"),
]
LEFT_OVER = re.compile(r"\b(async|await|asyncio)\b")


def unasync(source: str) -> str:
    """The blocking module made from the async module `source`."""
    docstring = ast.parse(source).body[0]
    if not (isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)):
        raise SystemExit(f"{SOURCE.name} must begin with its docstring")
    code = "".join(source.splitlines(keepends=True)[docstring.end_lineno :])
    for pattern, replacement in REPLACEMENTS:
        code = re.sub(pattern, replacement, code, flags=re.MULTILINE)
    for number, line in enumerate(code.splitlines(), start=docstring.end_lineno + 1):
        if LEFT_OVER.search(line):
            raise SystemExit(
                f"{SOURCE.name}:{number}: nothing turns this into blocking code: {line.strip()}\n"
                "Move what differs into _io_async.py and _io_sync.py, under one name."
            )
    return HEADER + DOCSTRING + code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    arguments = parser.parse_args()
    expected = unasync(SOURCE.read_text())
    if not arguments.check:
        TARGET.write_text(expected)
        return 0
    actual = TARGET.read_text() if TARGET.exists() else ""
    if actual == expected:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            fromfile=f"{TARGET.name} (as it is)",
            tofile=f"{TARGET.name} (as scripts/unasync.py makes it)",
        )
    )
    print(f"\n{TARGET} is out of date: run `python scripts/unasync.py`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
