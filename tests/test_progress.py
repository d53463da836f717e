"""histoclr.progress: plain, rate-limited progress lines outside a terminal; tqdm's bar in one."""

from __future__ import annotations

import io
import time

from histoclr.progress import ENV_INTERVAL, log_interval, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_writes_few_plain_lines(monkeypatch):
    monkeypatch.setenv(ENV_INTERVAL, "0.3")
    out = io.StringIO()
    bar = progress_bar(total=400, desc="finetune-seg", file=out)
    t0 = time.monotonic()
    for i in range(400):                    # 400 updates over ~1.2 s, each with a forced postfix
        time.sleep(0.003)
        bar.update(1)
        bar.set_postfix(loss=f"{i:.3f}")
    bar.close()
    elapsed = time.monotonic() - t0
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert text.endswith("\n")
    # the first line, one per 0.3 s at most, and the final state
    assert 2 <= len(lines) <= elapsed / 0.3 + 3, lines
    assert lines[-1].startswith("finetune-seg: 100%") and "400/400" in lines[-1]
    assert "loss=399.000" in lines[-1]


def test_terminal_keeps_tqdm_redraws(monkeypatch):
    monkeypatch.setenv(ENV_INTERVAL, "30")
    out = _Tty()
    bar = progress_bar(total=3, desc="tiling", file=out, mininterval=0)
    for _ in range(3):
        bar.update(1)
        bar.set_postfix(x=1)
    bar.close()
    assert out.getvalue().count("\r") >= 3   # a live bar redrawn in place


def test_interval_from_env(monkeypatch):
    monkeypatch.setenv(ENV_INTERVAL, "2.5")
    assert log_interval() == 2.5
    monkeypatch.setenv(ENV_INTERVAL, "soon")
    assert log_interval() == 10.0
    monkeypatch.delenv(ENV_INTERVAL)
    assert log_interval() == 10.0


def test_refresh_after_a_new_total_is_rate_limited_too(monkeypatch):
    """The tiler grows ``total`` and calls ``refresh()`` once per slide: no line for each."""
    monkeypatch.setenv(ENV_INTERVAL, "60")
    out = io.StringIO()
    bar = progress_bar(total=0, desc="tiling", file=out)
    for n in range(1, 31):
        bar.total = n * 10
        bar.refresh()
        bar.update(10)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines                # the first state and the last
    assert "300/300" in lines[-1]


def test_nested_bars_write_no_cursor_moves(monkeypatch):
    """A fine-tuning bar inside the ablation's bar: tqdm moves the cursor up (ESC [A); not in logs."""
    monkeypatch.setenv(ENV_INTERVAL, "0")
    out = io.StringIO()
    outer = progress_bar(total=1, desc="ablation", file=out)
    inner = progress_bar(total=2, desc="finetune-seg", file=out, position=1)
    inner.update(2)
    inner.close()
    outer.update(1)
    outer.close()
    text = out.getvalue()
    assert "\x1b" not in text and all(line.strip() for line in text.splitlines())
    assert any(line.startswith("finetune-seg: 100%") for line in text.splitlines())
