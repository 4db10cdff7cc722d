"""Start-up time of the studio: from launching `dynastudio gui DIR` to the first painted main window.

    python bench/gui_startup.py [--runs 5] [--project DIR]

Each run starts a fresh interpreter (cold for Python, warm for the OS file cache after the first run,
which is discarded) that does what the `dynastudio gui DIR` entry point does; an application-wide
event filter notes when the main window's first paint event has been handled. The time is taken from
just before the process is spawned, so the interpreter's start and every import are counted.
Without --project, the built-in demo project is created once in a temporary folder.
Results go to bench/results/gui_startup.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(project: str) -> None:
    """Run the studio's own main() on `project` and print the moment its window was first painted."""
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    app = QApplication([sys.argv[0]])

    class FirstPaint(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.Paint and isinstance(obj, QMainWindow):
                app.removeEventFilter(self)
                # a zero timer fires once the paint event, and everything queued with it, has been handled
                QTimer.singleShot(0, lambda: (print(f"first-paint {time.time():.6f}", flush=True), os._exit(0)))
            return False

    filt = FirstPaint()
    app.installEventFilter(filt)
    from dynastudio.studio.app import main

    main([project])
    os._exit(3)  # the window closed without ever being painted


def measure(project: Path, runs: int) -> list[float]:
    env = dict(
        os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"), TOKENIZERS_PARALLELISM="false"
    )
    times = []
    for i in range(runs + 1):
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(project)], env=env, capture_output=True, text=True, timeout=300
        )
        line = next((l for l in out.stdout.splitlines() if l.startswith("first-paint ")), None)
        if line is None:
            raise SystemExit(f"run {i}: no first paint (exit {out.returncode}):\n{out.stderr[-2000:]}")
        took = float(line.split()[1]) - t0
        print(
            f"run {i}{' (warm-up, discarded)' if i == 0 else ''}: {took:.2f} s to the first painted window", flush=True
        )
        if i:
            times.append(took)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--project")
    ap.add_argument("--child")
    ap.add_argument("--label", default="", help="a name for this measurement in the results (e.g. before, after)")
    a = ap.parse_args(argv)
    if a.child:
        child(a.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(a.project) if a.project else Path(tmp) / "demo"
        if not a.project:
            subprocess.run(
                [sys.executable, "-m", "dynastudio.core.cli", "new", str(project), "--demo"],
                check=True,
                capture_output=True,
            )
        times = measure(project, a.runs)
    times.sort()
    result = {
        "label": a.label,
        "runs": a.runs,
        "seconds": [round(t, 3) for t in times],
        "median_s": round(times[len(times) // 2], 3),
        "min_s": round(times[0], 3),
        "max_s": round(times[-1], 3),
        "platform": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = f"gui_startup{'_' + a.label if a.label else ''}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    line = (
        f"{a.label or 'start-up'}: median {result['median_s']:.2f} s (min {result['min_s']:.2f}, max {result['max_s']:.2f}) "
        f"over {a.runs} runs, {result['machine']}, load avg {result['load_avg']}, Qt platform {result['platform']}"
    )
    (out / f"{name}.md").write_text(f"# Studio start-up\n\n`python bench/gui_startup.py --label {a.label}`\n\n{line}\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
