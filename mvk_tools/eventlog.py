"""The competition log: every query and every submission appended as one JSON line (what VBS asks teams to keep:
when, what was asked, with which filters, what was shown, what was submitted and the server's verdict).

One line per event, written with a single ``write`` on a file opened for appending, under a lock: lines from
threads of one process never interleave. Passwords and session ids are never written. A log that cannot be
written is reported once on stderr and the search or submission goes on (the answer matters more than its log).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ENV_LOG = "MVK_LOG"
MAX_LOG_BYTES = 64 * 2 ** 20  # a log past this size is rotated: events.jsonl -> events.jsonl.1 -> ... (~14,000 queries)
KEEP_OLD = 5                  # rotated files kept (events.jsonl.1 is the newest); the oldest is dropped
LOGGED_RESULTS = 100          # ranked results kept per query event
RESULT_FIELDS = ("rank", "score", "site", "video_id", "frame_index", "time", "gid",
                 "first_time", "then_time", "first_gid", "then_gid")


def default_log_path(index: str | Path | None, environ=os.environ) -> Path | None:
    """``$MVK_LOG`` if set, else ``<index>/logs/events.jsonl`` (None when neither is known)."""
    if environ.get(ENV_LOG):
        return Path(environ[ENV_LOG]).expanduser()
    return Path(index) / "logs" / "events.jsonl" if index is not None else None


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value)


def result_summary(rows) -> list[dict]:
    """The first LOGGED_RESULTS rows of a result table, reduced to what identifies and ranks them."""
    if rows is None or len(rows) == 0:
        return []
    cols = [c for c in RESULT_FIELDS if c in rows.columns]
    out = []
    for rec in rows.iloc[:LOGGED_RESULTS][cols].to_dict("records"):
        out.append({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in rec.items()})
    return out


class EventLog:
    """Appends events to one JSONL file; ``EventLog(None)`` keeps nothing."""

    def __init__(self, path: str | Path | None, *, max_bytes: int = MAX_LOG_BYTES, keep: int = KEEP_OLD) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes, self.keep = max_bytes, keep
        self._lock = threading.Lock()
        self._warned = False

    def _rotate(self, adding: int) -> None:
        """Before a write that would take the log past ``max_bytes``: shift ``events.jsonl.N`` up by one (the
        one past ``keep`` goes) and start a new file, so the log's disk use stays bounded."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + adding <= self.max_bytes:
            return
        old = [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)]
        if not old:
            self.path.unlink(missing_ok=True)
            return
        old[-1].unlink(missing_ok=True)
        for newer, older in zip(old[-2::-1], old[:0:-1]):
            if newer.exists():
                os.replace(newer, older)
        os.replace(self.path, old[0])

    def write(self, event: str, **fields) -> bool:
        """Append one event (``time`` ISO-8601 UTC, ``timestamp`` ms since the epoch, ``event``, fields);
        False when there is no log or it could not be written."""
        if self.path is None:
            return False
        now = time.time()
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
                  "timestamp": int(now * 1000), "event": event, **fields}
        line = json.dumps(record, default=_jsonable, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._rotate(len(line.encode("utf-8")))
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line)
                return True
            except OSError as exc:
                if not self._warned:
                    print(f"mvk: warning: cannot write the event log {self.path}: {exc}", file=sys.stderr)
                    self._warned = True
                return False

    def query(self, *, source: str, kind: str, filters=None, results=None, **fields) -> bool:
        """One query: its text (or image name), filters, ranking settings and the ranked results shown."""
        flt = None
        if filters is not None:
            flt = {"sites": list(filters.sites), "places": list(filters.places), "date_from": filters.date_from,
                   "date_to": filters.date_to}
        return self.write("query", source=source, kind=kind, filters=flt, **fields,
                          results=result_summary(results))

    def submission(self, *, source: str, **fields) -> bool:
        """One submission to an evaluation server: the answer and the server's reply (or the error)."""
        return self.write("submit", source=source, **fields)
