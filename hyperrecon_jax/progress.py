"""The one progress display of the scripts: training steps, scored pairs, slices.

On a terminal it is a tqdm bar (with its ETA); otherwise, e.g. in a log file,
a line at most every ``every`` seconds and at the end, so a long job shows
that it is alive without flooding the log.
"""

import contextlib
import sys
import time


class Progress:
  """Work done out of a known total.

  Args:
    total: the units of the whole job.
    unit: what one unit is, e.g. ``'step'`` or ``'pair'`` (the bar's unit).
    line: ``line(done, total, note) -> str``, the text of a log line.
    initial: units already done (a resumed run).
    enabled: False shows nothing.
    every: seconds between log lines off a terminal; None writes a line only
      when `note` is called (e.g. training's log steps).
  """

  def __init__(self, total: int, unit: str, line, *, initial: int = 0,
               enabled: bool = True, every: float | None = 10.0):
    self._total, self._done, self._line = total, initial, line
    self._enabled, self._every, self._last = enabled, every, time.time()
    self._bar, self._note = None, ""
    if enabled and sys.stderr.isatty():
      with contextlib.suppress(ImportError):
        import tqdm
        self._bar = tqdm.tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True)

  @property
  def done(self) -> int:
    return self._done

  def __call__(self, count: int) -> None:
    """Advances by ``count`` units (at most to the total: padding is not work)."""
    self.set(self._done + count)

  def set(self, done: int) -> None:
    """Sets the units done."""
    done = min(done, self._total)
    finished = done == self._total and self._done < self._total
    if self._bar is not None:
      self._bar.update(done - self._done)
    self._done = done
    if self._bar is None and self._enabled and self._every is not None:
      now = time.time()
      # The last line once: later calls (padding) add nothing to say.
      if finished or (done < self._total and now - self._last > self._every):
        self._print(now)

  def note(self, text: str) -> None:
    """Shows ``text`` beside the count: the bar's postfix, or a log line now."""
    self._note = text
    if self._bar is not None:
      self._bar.set_postfix_str(text, refresh=False)
    elif self._enabled:
      self._print(time.time())

  def _print(self, now: float) -> None:
    self._last = now
    # Printed, not logged: the scripts keep absl at WARNING to silence
    # orbax's per-save INFO lines.
    print(self._line(self._done, self._total, self._note), file=sys.stderr, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
