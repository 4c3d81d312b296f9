"""Progress you can watch: a reporter for the long stages (pretrain, reward, align, evaluation,
Feast, the A/B), a rich bar in a terminal and one plain line per interval everywhere else.

One concept, a `Status` (stage, step of total, loss, samples/s, elapsed, time budget) shown by
a view chosen from `console.is_terminal`:
- `Bar`: a rich Progress, one row per running stage; a finished stage leaves one summary line;
- `Lines`: where stdout is not a terminal (CI, a pod's log, a kfp.local step) one plain line
  per `interval_s` and one at the end, no ANSI escape codes, e.g.
  `progress pretrain step=150/600 loss=4.1234 samples/s=812.3 elapsed=0:45 eta=2:15 budget_left=4:15`.

`Reporter` consumes the `log` records the training loops already emit (`{"step", "loss",
"samples_per_s", ...}`; `onerec.train`, `onerec.reward`, `onerec.ecpo`): the stage wrapping
the loop knows the planned steps and the budget, so the loops need no new plumbing. It forwards
every record to the caller's own `log`. Where samples/s is missing it is the steps between two
records times `batch_size` over their wall time (evaluation counts users: users/s).

Another process's plain lines are the same `Status` again (`Status.parse`): `Follow` tails a
log file (kfp.local's `kfp.log`, an A/B client's log) and shows what is running there, so
`onerec demo` in a terminal draws a bar for each stage of each cycle run under kfp.local.

`ONEREC_PROGRESS=0` turns it all off, `ONEREC_PROGRESS=plain` prints lines in a terminal too;
`ONEREC_PROGRESS_INTERVAL` is the seconds between plain lines (default 5). Under torchrun only
rank 0 reports.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

Log = Callable[[dict[str, Any]], None]
ENV, INTERVAL_ENV = "ONEREC_PROGRESS", "ONEREC_PROGRESS_INTERVAL"
PREFIX = "progress "
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FIELD = re.compile(r"(\S+?)=(\S+)")


def _clock(seconds: float) -> str:
    """123.4 -> '2:03'; an hour or more -> '1:02:03'."""
    s = max(0, round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _seconds(clock: str) -> float:
    """'2:03' -> 123.0 (the inverse of `_clock`)."""
    out = 0.0
    for part in clock.split(":"):
        out = out * 60 + float(part)
    return out


@dataclass
class Status:
    """Where one stage stands. `step` counts `unit`s (steps; users for evaluation)."""

    stage: str
    step: int = 0
    total: int | None = None
    unit: str = "step"
    loss: float | None = None
    samples_per_s: float | None = None
    elapsed_s: float = 0.0
    budget_s: float | None = None
    note: str = ""  # a phase name (Feast) or a message
    done: bool = False

    @property
    def eta_s(self) -> float | None:
        """Seconds to the planned `total` at the pace so far."""
        if not self.total or self.step <= 0:
            return None
        return self.elapsed_s / self.step * max(0, self.total - self.step)

    @property
    def budget_left_s(self) -> float | None:
        return None if self.budget_s is None else max(0.0, self.budget_s - self.elapsed_s)

    def fields(self) -> list[tuple[str, str]]:
        """(name, value) pairs after the step, in the order a line shows them."""
        out = []
        if self.loss is not None and math.isfinite(self.loss):
            out.append(("loss", f"{self.loss:.4f}"))
        if self.samples_per_s is not None:
            out.append(("samples/s", f"{self.samples_per_s:.1f}"))
        if self.note:
            out.append(("phase", self.note))
        out.append(("elapsed", _clock(self.elapsed_s)))
        if self.eta_s is not None and not self.done:
            out.append(("eta", _clock(self.eta_s)))
        if self.budget_left_s is not None:
            out.append(("budget_left", _clock(self.budget_left_s)))
        return out

    def line(self) -> str:
        """The plain line: `progress <stage> <unit>=<step>[/<total>] <field>=<value> ...`."""
        words = [f"{PREFIX}{self.stage}"]
        if self.total or self.step:  # a stage that counts nothing (yet) shows its time only
            words.append(f"{self.unit}={self.step}/{self.total}" if self.total
                         else f"{self.unit}={self.step}")
        words += [f"{k}={v}" for k, v in self.fields()]
        return " ".join(words) + (" done" if self.done else "")

    @classmethod
    def parse(cls, text: str) -> Status | None:
        """A line `line()` wrote (anywhere in `text`, ANSI codes ignored), else None."""
        text = _ANSI.sub("", text)
        at = text.find(PREFIX)
        if at < 0:
            return None
        words = text[at + len(PREFIX):].split()
        if len(words) < 2 or "=" not in words[1]:
            return None
        unit, _, count = words[1].partition("=")
        step, _, total = count.partition("/")
        f = dict(_FIELD.findall(" ".join(words[2:])))
        try:
            elapsed = _seconds(f.get("elapsed", "0"))
            left = f.get("budget_left")
            return cls(stage=words[0], step=int(step), total=int(total) if total else None,
                       unit=unit, loss=float(f["loss"]) if "loss" in f else None,
                       samples_per_s=float(f["samples/s"]) if "samples/s" in f else None,
                       elapsed_s=elapsed, note=f.get("phase", ""), done=words[-1] == "done",
                       budget_s=elapsed + _seconds(left) if left else None)
        except ValueError:
            return None

    def words(self) -> list[str]:
        """The fields for a person: '5/40 steps', 'loss 1.9982', '59.1 samples/s', ..."""
        rate = "samples/s" if self.unit == "step" else f"{self.unit}s/s"  # evaluation: users/s
        names = {"samples/s": "{} " + rate, "eta": "eta {}", "budget_left": "budget left {}",
                 "elapsed": "{} elapsed", "loss": "loss {}", "phase": "{}"}
        count = [f"{self.step}/{self.total} {self.unit}s"] if self.total else []
        return count + [names[k].format(v) for k, v in self.fields()]

    def summary(self) -> str:
        """What a finished stage leaves behind in a terminal."""
        return f"{self.stage}: " + ", ".join(w for w in self.words()
                                             if not w.startswith("budget left"))


# -- views --------------------------------------------------------------------------------------
class View:
    """Shows statuses, one row per key; the base shows nothing (`ONEREC_PROGRESS=0`)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def show(self, key: str, status: Status) -> None: ...

    def note(self, text: str) -> None: ...


class Bar(View):
    """A rich Progress on a terminal console: a row per running stage (bar, step of total,
    loss, samples/s, time left); a stage that ends leaves its summary line above the bars."""

    def __init__(self, console: Console) -> None:
        # the bars stay on the stream they are drawn on, even while sys.stdout is redirected
        # (kfp.local's steps log into a file meanwhile: `onerec.app.pipeline_local`)
        console.file = console.file
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[info]}"), console=console,
                                 redirect_stdout=False, redirect_stderr=False)
        self.rows: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def show(self, key: str, status: Status) -> None:
        info = "  ".join(status.words())
        with self._lock:
            if status.done:
                if key in self.rows:
                    self.progress.remove_task(self.rows.pop(key))
                self.progress.console.print(f"  {status.summary()}", highlight=False,
                                            markup=False)
                return
            if key not in self.rows:
                self.rows[key] = self.progress.add_task(status.stage, total=status.total,
                                                        info=info)
            self.progress.update(self.rows[key], description=status.stage, total=status.total,
                                 completed=status.step, info=info)

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)


class Lines(View):
    """Plain lines on a stream: one per key per `interval_s`, at once when the key's stage
    changes (the gate's second evaluation), and the last (done) always."""

    def __init__(self, stream: IO[str], interval_s: float) -> None:
        self.stream, self.interval_s = stream, interval_s
        self.last: dict[str, tuple[float, str]] = {}

    def show(self, key: str, status: Status) -> None:
        now = time.monotonic()
        t, stage = self.last.get(key, (-math.inf, ""))
        if not status.done and stage == status.stage and now - t < self.interval_s:
            return
        self.last[key] = (now, status.stage)
        self.note(status.line())

    def note(self, text: str) -> None:
        self.stream.write(_ANSI.sub("", text) + "\n")
        self.stream.flush()  # a pipe (kfp.local, a pod) would hold it back otherwise


def interval_s() -> float:
    return float(os.environ.get(INTERVAL_ENV, "5"))


def make_view(console: Console | None = None) -> View:
    """Bar on a terminal, Lines elsewhere (or with ONEREC_PROGRESS=plain), nothing with
    ONEREC_PROGRESS=0 or on a rank other than 0."""
    mode = os.environ.get(ENV, "auto").lower()
    if mode in ("0", "off", "false", "no") or os.environ.get("RANK", "0") != "0":
        return View()
    console = console or Console()
    if console.is_terminal and mode != "plain":
        return Bar(console)
    return Lines(console.file, interval_s())


# -- a stage in this process --------------------------------------------------------------------
class Reporter:
    """`with Reporter("pretrain", total=steps, budget_s=b, log=log) as report: train(...,
    log=report)`: each record with a "step" updates the view; {"message": ...} is printed;
    every record also goes to `log`. Entering shows step 0 (the plan), leaving the last."""

    def __init__(self, stage: str, *, total: int | None = None, budget_s: float | None = None,
                 batch_size: int | None = None, unit: str = "step", log: Log | None = None,
                 console: Console | None = None, view: View | None = None) -> None:
        self.status = Status(stage, total=total, unit=unit, budget_s=budget_s)
        self.batch_size, self.log = batch_size, log
        self.view = view if view is not None else make_view(console)
        self.t0 = self._t_last = time.perf_counter()
        self._step_last = 0

    def __enter__(self) -> Reporter:
        self.t0 = self._t_last = time.perf_counter()
        self.view.start()
        self.view.show(self.status.stage, self.status)
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.status = replace(self.status, done=True, elapsed_s=time.perf_counter() - self.t0,
                              note="failed" if kind is not None else self.status.note)
        self.view.show(self.status.stage, self.status)
        self.view.stop()

    def __call__(self, rec: dict[str, Any]) -> None:
        if self.log is not None:
            self.log(rec)
        if "message" in rec:
            self.view.note(str(rec["message"]))
        if "step" not in rec:
            return
        now = time.perf_counter()
        step = int(rec["step"])
        rate = rec.get("samples_per_s")
        if rate is None and self.batch_size and now > self._t_last and step > self._step_last:
            rate = (step - self._step_last) * self.batch_size / (now - self._t_last)
        self._t_last, self._step_last = now, step
        self.status = replace(self.status, step=step, elapsed_s=now - self.t0,
                              loss=float(rec["loss"]) if "loss" in rec else self.status.loss,
                              samples_per_s=rate if rate is not None
                              else self.status.samples_per_s,
                              note=str(rec.get("phase", "")))
        self.view.show(self.status.stage, self.status)


# -- a stage in another process -----------------------------------------------------------------
_KFP_START = re.compile(r"Executing task '([\w.-]+)'")
_KFP_END = re.compile(r"Task '([\w.-]+)' finished with status (\w+)")


class Follow:
    """Show what another process writes to `path` while it runs: its progress lines, and
    kfp.local's task starts and ends. A task's row is labelled `<label><task>` (the label as
    the task started: `cycle 1/2 · `) and the progress of the stage inside it fills that row;
    outside a task each stage has its own row. A thread polls the file every `poll_s`;
    `read()` catches up at once (before the caller prints what follows a task)."""

    def __init__(self, path: Path, view: View, label: str = "", poll_s: float = 0.5) -> None:
        self.path, self.view, self.label, self.poll_s = Path(path), view, label, poll_s
        self.task: str | None = None
        self.task_label = label  # the label as the task started
        self.current: Status | None = None  # the task's row
        self.t_seen = time.perf_counter()  # when `current` was set
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # what the file holds already is not this run's; a file replaced or cut is read anew
        st = self.path.stat() if self.path.exists() else None
        self._inode: int | None = st.st_ino if st else None
        self._offset = st.st_size if st else 0

    def __enter__(self) -> Follow:
        self.view.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.read()  # what arrived after the last poll
        self._end_task()
        self.view.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.read()
            with self._lock:
                if self.task is not None and self.current is not None:
                    self.view.show(self.task, self._now(self.current))  # its clock moves on

    def read(self) -> None:
        """Show every complete line written since the last read."""
        with self._lock:
            for line in self._new_lines():
                self.feed(line)

    def _new_lines(self) -> list[str]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._inode, self._offset = st.st_ino, 0
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a half-written line waits for the next read
        self._offset += end
        return chunk[:end].decode(errors="replace").splitlines()

    def feed(self, line: str) -> None:
        """One line of the followed log."""
        text = _ANSI.sub("", line)
        if m := _KFP_START.search(text):
            self._end_task()
            self.task, self.task_label = m.group(1), self.label
            self._set(Status(f"{self.label}{self.task}"))
        elif m := _KFP_END.search(text):
            if m.group(1) == self.task:
                self._end_task(m.group(2).lower())
        elif (s := Status.parse(text)) is None:
            return
        elif self.task is None:  # a process of its own (an A/B client): a row per stage
            self.view.show(s.stage, replace(s, stage=f"{self.label}{s.stage}"))
        else:
            inner = self.task if s.stage == self.task else f"{self.task} · {s.stage}"
            self._set(replace(s, stage=f"{self.task_label}{inner}", done=False))

    def _set(self, status: Status) -> None:
        if self.task is None:  # callers set the task first; without one there is no row
            return
        self.current, self.t_seen = status, time.perf_counter()
        self.view.show(self.task, status)

    def _now(self, current: Status) -> Status:
        """The task's row `current`, its elapsed time moved on since it was set."""
        return replace(current, elapsed_s=current.elapsed_s + time.perf_counter() - self.t_seen)

    def _end_task(self, outcome: str = "") -> None:
        if self.task is None or self.current is None:
            return
        now = self._now(self.current)
        note = outcome if outcome not in ("", "success") else now.note  # "failure" says so
        self.view.show(self.task, replace(now, stage=f"{self.task_label}{self.task}", done=True,
                                          note=note))
        self.task, self.current = None, None
