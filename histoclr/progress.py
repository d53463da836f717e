"""Progress bars that read well in a terminal and in a log file (CI, ``nohup``, ``> run.log``).

:func:`progress_bar` is ``tqdm`` with one difference: when its stream is not a terminal, it writes
one plain line (no ``\\r`` redraws) at most every :func:`log_interval` seconds, plus the final
state, instead of one redraw per refresh. Every stage's bar (tile, pretrain, finetune-seg, ablate)
goes through it.

``HISTOCLR_PROGRESS_INTERVAL`` (seconds, default 10) sets the interval outside a terminal.
"""

from __future__ import annotations

import os
import re
import sys
import time

from tqdm import tqdm

ENV_INTERVAL = "HISTOCLR_PROGRESS_INTERVAL"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DEFAULT_INTERVAL_S = 10.0


def log_interval() -> float:
    """Seconds between two progress lines outside a terminal (``HISTOCLR_PROGRESS_INTERVAL``)."""
    raw = os.environ.get(ENV_INTERVAL, "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        value = DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _LineWriter:
    """A file wrapper for tqdm outside a terminal: each redraw becomes one line; clears vanish."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> int:
        text = _ANSI.sub("", s).replace("\r", "").strip()   # nested bars move the cursor: drop that
        if text:
            self.stream.write(text + "\n")
        return len(s)

    def flush(self) -> None:
        getattr(self.stream, "flush", lambda: None)()

    def isatty(self) -> bool:
        return False


class _LogBar(tqdm):
    """tqdm for logs: every redraw (``update``, ``set_postfix``, a ``refresh()`` after changing
    ``total``) is held to one line per ``mininterval`` seconds; ``close`` shows the last state."""

    _last_line = float("-inf")

    def refresh(self, nolock=False, lock_args=None):
        if self.disable:                # a disabled tqdm has no mininterval
            return
        now = time.monotonic()
        if now - self._last_line < self.mininterval:
            return
        self._last_line = now
        super().refresh(nolock=nolock, lock_args=lock_args)


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A ``tqdm(iterable, **kwargs)`` (stream: ``file=``, default stderr) that, outside a terminal,
    prints a plain line at most every :func:`log_interval` seconds and the last state at close."""
    stream = kwargs.pop("file", None) or sys.stderr
    if is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    interval = log_interval()
    kwargs.update(file=_LineWriter(stream), mininterval=interval, maxinterval=max(interval, 1.0),
                  miniters=1, dynamic_ncols=False, ascii=True)
    kwargs.setdefault("ncols", 100)
    return _LogBar(iterable, **kwargs)


class TimedLoader:
    """Wraps an iterable of batches (a DataLoader); records, per batch, the wait for it (``waits``,
    seconds) and when it was handed over (``stamps``, ``time.perf_counter``), for throughput and
    data-wait shares in the benchmarks."""

    def __init__(self, loader):
        self.loader = loader
        self.waits: list[float] = []
        self.stamps: list[float] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            t1 = time.perf_counter()
            self.waits.append(t1 - t0)
            self.stamps.append(t1)
            yield batch
