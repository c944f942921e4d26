"""Tests of hyperrecon_jax.progress: the one progress display of the scripts."""

from hyperrecon_jax import progress


def _line(done, total, note):
  return f"{done}/{total} {note}".strip()


def test_off_a_terminal_it_writes_a_line_at_the_end_and_on_notes(capsys, monkeypatch):
  # pytest's stderr is no terminal: log lines, not a bar.
  clock = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).__next__
  monkeypatch.setattr(progress.time, "time", clock)
  p = progress.Progress(10, "pair", _line, every=100.0)
  p(4)
  p(4)
  assert capsys.readouterr().err == ""  # within `every` seconds, not the end
  p(5)  # padding beyond the total is not work
  assert p.done == 10
  assert capsys.readouterr().err == "10/10\n"
  p(2)  # more padding after the end: the last line is not repeated
  assert capsys.readouterr().err == ""
  p.note("loss=1")
  assert capsys.readouterr().err == "10/10 loss=1\n"
  p.close()


def test_a_line_every_interval_and_none_when_disabled(capsys, monkeypatch):
  clock = iter([0.0, 11.0, 12.0, 30.0, 31.0]).__next__
  monkeypatch.setattr(progress.time, "time", clock)
  p = progress.Progress(100, "step", _line, every=10.0)
  p.set(5)    # 11 s after the start: a line
  p.set(6)    # 1 s later: none
  p.set(7)    # 18 s later: a line
  assert capsys.readouterr().err.splitlines() == ["5/100", "7/100"]
  quiet = progress.Progress(3, "pair", _line, enabled=False)
  quiet(3)
  quiet.note("x")
  assert capsys.readouterr().err == ""


def test_without_an_interval_only_notes_write(capsys):
  p = progress.Progress(4, "step", _line, initial=1, every=None)
  p.set(4)
  assert capsys.readouterr().err == ""
  p.note("done")
  assert capsys.readouterr().err == "4/4 done\n"
