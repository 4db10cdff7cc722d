"""The CLI's event sinks (progress bars, JSON lines) and its Ctrl-C handling."""

from __future__ import annotations

import signal
import sys

from ..errors import Cancelled
from ..events import (
    EvalEnded,
    LogMessage,
    StageEnded,
    StageProgress,
    StageStarted,
    StepEnded,
    StopAcknowledged,
    StopToken,
    event_to_json,
)


class ProgressPrinter:
    """Event sink that draws one tqdm bar per stage and prints evaluations and checkpoints."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # looked up now, not at import: a test (or a caller) may replace stderr
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if isinstance(event, StageStarted):
            self._close()
            self.bar = tqdm(
                total=event.total_steps,
                initial=event.resumed_from_step,
                desc=event.stage,
                file=self.stream,
                dynamic_ncols=True,
            )
        elif isinstance(event, StepEnded) and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            mean = sum(event.losses.values()) / max(1, len(event.losses))
            self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{event.lr:.1e}", refresh=False)
        elif isinstance(event, StageProgress) and self.bar is not None:
            self.bar.update(event.done - self.bar.n)
        elif isinstance(event, EvalEnded):
            vals = ", ".join(f"{k} {v:.4f}" for k, v in event.results.items())
            self._write(f"[{event.stage}] dev {event.metric_name}: {vals}")
        elif isinstance(event, StageEnded):
            self._close()
            self._write(f"[{event.stage}] {'skipped' if event.skipped else 'done'} in {event.seconds:.1f}s")
        elif isinstance(event, LogMessage):
            self._write(f"[{event.level}] {event.text}")
        elif isinstance(event, StopAcknowledged):
            self._write(f"stop requested ({event.source}): finishing this step, then saving a checkpoint")

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonLines:
    """Event sink for `--events jsonl`: one JSON object per line on stdout (the format of run/events.jsonl)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def __call__(self, event) -> None:
        self.stream.write(event_to_json(event) + "\n")
        self.stream.flush()

    def _close(self) -> None:
        pass


def close_sink(sink) -> None:
    close = getattr(sink, "_close", None)
    if close is not None:
        close()


def make_sink(kind: str):
    from ..events import null_sink

    if kind == "jsonl":
        return JsonLines()
    if kind == "none":
        return null_sink
    return ProgressPrinter()


def stop_on_sigint(also_sigterm: bool = False) -> tuple[StopToken, dict]:
    """A StopToken that Ctrl-C (and, when asked, SIGTERM) sets; returns it and the handlers it replaced."""
    stop = StopToken()

    def on_signal(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        try:
            print("\nstopping after this step (Ctrl-C again to abort now)...", file=sys.stderr, flush=True)
        except OSError:  # SIGHUP: the terminal is gone; stop all the same
            pass

    # SIGTERM: docker stop, timeout, a scheduler; SIGHUP: the terminal or SSH session went away
    sigs = [signal.SIGINT] + (
        [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []) if also_sigterm else []
    )
    return stop, {sig: signal.signal(sig, on_signal) for sig in sigs}


def run_stoppable(name: str, project, request, sink, stopped: str):
    """Run a short job with Ctrl-C asking it to stop; None (after printing `stopped`) when it stopped."""
    from .. import jobs

    stop, previous = stop_on_sigint()
    try:
        return jobs.run(name, project, request, sink, stop)
    except Cancelled:
        print(stopped, file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGINT, previous[signal.SIGINT])


def print_logs(event) -> None:
    if isinstance(event, LogMessage):
        print(f"[{event.level}] {event.text}", file=sys.stderr, flush=True)
