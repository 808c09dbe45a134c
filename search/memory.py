"""How much memory an opened index holds resident (its rows, and the pages of its memory-mapped files)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from search.shard import Index


@dataclass(frozen=True)
class MemoryUse:
    """Resident memory of an opened index, in bytes: ``tables`` (the frame and object rows held in memory),
    ``mapped`` (pages of the index's memory-mapped files resident in this process, of ``mapped_total``
    mapped), and ``process`` (this process's whole resident set, libraries included). None where the OS
    does not say (no /proc)."""
    tables: int
    mapped: int | None
    mapped_total: int | None
    process: int | None

    @property
    def index(self) -> int:
        """The index's own resident memory: its tables plus its resident mapped pages."""
        return self.tables + (self.mapped or 0)

    def describe(self) -> str:
        text = f"index resident memory {_size(self.index)} (rows {_size(self.tables)}"
        if self.mapped is not None:
            text += f", memory-mapped files {_size(self.mapped)} of {_size(self.mapped_total or 0)}"
        text += ")"
        if self.process is not None:
            text += f"; process {_size(self.process)}"
        return text



def _size(n: int) -> str:
    """Bytes for people: KiB under 1 MiB (a small index is not "0 MiB"), MiB under 10 GiB, GiB above."""
    if n < 2 ** 20:
        return f"{n / 2 ** 10:,.0f} KiB"
    if n < 10 * 2 ** 30:
        return f"{n / 2 ** 20:,.0f} MiB"
    return f"{n / 2 ** 30:,.1f} GiB"



def memory_use(index: "Index") -> MemoryUse:
    """How much memory the opened ``index`` holds resident (see MemoryUse); Linux reads /proc/self/smaps."""
    tables = int(sum(t.memory_usage(index=True, deep=True).sum() for t in (index.frames, index.objects)))
    mapped = total = process = None
    root = str(Path(index.root).resolve())
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return MemoryUse(tables, None, None, None)
    mapped = total = 0
    inside = False
    for line in text.splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            inside = len(head) == 6 and head[5].startswith(root + os.sep)
        elif inside and line.startswith("Rss:"):
            mapped += int(line.split()[1]) * 1024
        elif inside and line.startswith("Size:"):
            total += int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                process = int(line.split()[1]) * 1024
    return MemoryUse(tables, mapped, total, process)
