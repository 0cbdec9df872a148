"""The part of :class:`~pykregistry.trace_file.SpanTrees` that does not fit
in memory: trees still waiting for their root, kept in a temporary SQLite
file and drawn from it top-down once their root arrives.

``JsonLines`` writes each span at its end, children first, so a trace's
tree is held until its root's line comes. One trace of a million spans
would be held whole; :class:`SpanTrees` keeps at most a bound of spans in
memory and moves them here past it. A row is a span's (or event's) line
and start time, under either the parent it waits for (``waiting``: trace
id and span id, the key of ``SpanTrees``) or a row already here
(``parent``). Siblings are drawn by start time, then by ``seq``, the order
in which they arrived, which is also the order in which memory would have
drawn them: the output does not depend on where the tree was kept.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator

from pykregistry.tree import TreeStyle

__all__ = ["SpilledTrees"]

# A node of a tree not yet drawn, as SpanTrees holds it: its start time,
# its line, and its children (None for an event or a span without any).
_Node = tuple[int, str, "list[_Node] | None"]
# A row: seq, waiting key, parent seq, start, line.
_Row = tuple[int, "str | None", "int | None", int, str]

# SQLite's integers are 64-bit: a start time past them (a file not written
# by JsonLines, or the year 2262) is kept as the nearest one.
_LOWEST, _HIGHEST = -(1 << 63), (1 << 63) - 1


def _clamp(start: int) -> int:
    return _LOWEST if start < _LOWEST else _HIGHEST if start > _HIGHEST else start


# Waiting groups read per query at the end of the file.
_GROUPS_PER_QUERY = 1000


class SpilledTrees:
    """Trees waiting for their root, in a temporary SQLite file (in
    :func:`tempfile.gettempdir`, so ``TMPDIR`` chooses where) that
    :meth:`close` deletes. Memory used is SQLite's page cache (2 MiB) and
    one branch of a tree being drawn."""

    def __init__(self, style: TreeStyle) -> None:
        self._style = style
        fd, self.path = tempfile.mkstemp(prefix="pykregistry-tree-", suffix=".sqlite")
        os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA temp_store = FILE;
            CREATE TABLE nodes (
                seq INTEGER PRIMARY KEY,
                waiting TEXT,
                parent INTEGER,
                start INTEGER NOT NULL,
                line TEXT NOT NULL
            );
            CREATE INDEX by_waiting ON nodes (waiting, seq) WHERE waiting IS NOT NULL;
            CREATE INDEX by_parent ON nodes (parent, start, seq) WHERE parent IS NOT NULL;
            BEGIN;
            """
        )
        self._seq = 0
        self.rows = 0

    def __repr__(self) -> str:
        return f"SpilledTrees(path={self.path!r}, rows={self.rows})"

    def close(self) -> None:
        """Deletes the file."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    # === writing ===

    def spill(self, waiting: dict[str, list[_Node]]) -> int:
        """Moves the trees of ``waiting`` (children by the key of the parent
        they wait for) here; returns how many nodes moved."""
        before = self.rows
        for key, nodes in waiting.items():
            self._insert(nodes, key, None)
        return self.rows - before

    def waits(self, key: str) -> bool:
        """Whether a node here waits for the parent ``key``."""
        found = self._db.execute("SELECT 1 FROM nodes WHERE waiting = ? LIMIT 1", (key,)).fetchone()
        return found is not None

    def attach(self, key: str, node: _Node, waiting: str | None) -> int:
        """Adds the span ``node`` (whose children in memory come with it),
        whose key is ``key``, waiting for ``waiting`` (None: a root, to be
        drawn); the nodes here that wait for ``key`` become its children.
        Returns its seq."""
        start, line, kids = node
        seq = self._next()
        self._db.execute(
            "INSERT INTO nodes VALUES (?, ?, NULL, ?, ?)", (seq, waiting, _clamp(start), line)
        )
        self.rows += 1
        self._db.execute(
            "UPDATE nodes SET waiting = NULL, parent = ? WHERE waiting = ?", (seq, key)
        )
        if kids:
            self._insert(kids, None, seq)
        return seq

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _insert(self, nodes: list[_Node], waiting: str | None, parent: int | None) -> None:
        self._db.executemany(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?)", self._rows(nodes, waiting, parent)
        )

    def _rows(self, nodes: list[_Node], waiting: str | None, parent: int | None) -> Iterator[_Row]:
        # Siblings get consecutive seqs in the order they arrived.
        todo: list[tuple[list[_Node], str | None, int | None]] = [(nodes, waiting, parent)]
        while todo:
            siblings, key, up = todo.pop()
            for start, line, kids in siblings:
                seq = self._next()
                self.rows += 1
                yield seq, key, up, _clamp(start), line
                if kids:
                    todo.append((kids, None, seq))

    # === drawing ===

    def draw(self, root: int) -> Iterator[str]:
        """The lines of the tree under the row ``root``, as
        ``SpanTrees`` draws them, deleting its rows as they are drawn."""
        style = self._style
        tee, elbow, pipe, branch = style.tee, style.elbow, style.pipe, style.branch
        db = self._db
        row = db.execute("SELECT line FROM nodes WHERE seq = ?", (root,)).fetchone()
        db.execute("DELETE FROM nodes WHERE seq = ?", (root,))
        self.rows -= 1
        yield branch("") + row[0]
        # Per level: the row, the last child drawn (start, seq), the
        # prefix of its children's lines, whether it had any.
        stack: list[tuple[int, int, int, str, bool]] = [(root, _LOWEST, -1, "", False)]
        while stack:
            seq, after_start, after_seq, prefix, had = stack[-1]
            found = db.execute(
                "SELECT seq, start, line FROM nodes WHERE parent = ? AND (start, seq) > (?, ?)"
                " ORDER BY start, seq LIMIT 2",
                (seq, after_start, after_seq),
            ).fetchall()
            if not found:
                stack.pop()
                if had:
                    self.rows -= db.execute("DELETE FROM nodes WHERE parent = ?", (seq,)).rowcount
                continue
            kid, start, line = found[0]
            last = len(found) == 1
            stack[-1] = (seq, start, kid, prefix, True)
            yield branch(prefix + (elbow if last else tee)) + line
            stack.append((kid, _LOWEST, -1, prefix + ("    " if last else pipe), False))

    def leftovers(self, note: Callable[[str], str]) -> Iterator[Iterator[str]]:
        """At the end of the file: each group of nodes still waiting for
        their parent, in the order the groups began, drawn under a line
        that ``note(key)`` makes."""
        db = self._db
        while True:
            groups = db.execute(
                "SELECT waiting, MIN(start) FROM nodes WHERE waiting IS NOT NULL"
                " GROUP BY waiting ORDER BY MIN(seq) LIMIT ?",
                (_GROUPS_PER_QUERY,),
            ).fetchall()
            if not groups:
                return
            for key, start in groups:
                seq = self.attach(key, (start, note(key), None), None)
                yield self.draw(seq)
