"""A 1,000,000-row CSV: `dynastudio new` time and peak memory, and the studio's longest pause while the Project
page checks and previews it.

    python bench/huge_csv.py [--rows 1000000]

The file has SST-2-like sentences (5-20 words) and 0/1 labels; the dev file is its first 1,000 rows. `new`
runs as a child process (the built-in MiniLM tokenizer), and its peak resident memory is the child's
ru_maxrss. The GUI part opens the Project page offscreen, points the New-project form at the file, and
records the gaps between ticks of a 10 ms timer on the GUI thread from that moment until the form has read
the file. Results go to bench/results/huge_csv.{json,md}. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "the film movie plot acting story was is a an very quite too not never always good bad great dull fine "
    "awful lovely boring moving funny slow tense charming predictable clever silly warm cold"
).split()


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence,label\n")
        for _ in range(rows):
            f.write(" ".join(rng.choices(WORDS, k=rng.randint(5, 20))) + f",{rng.randint(0, 1)}\n")


def gui_gaps(train: Path, dev: Path) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from dynastudio.studio.app import MainWindow

    app = QApplication.instance() or QApplication([])
    w = MainWindow()
    w.show()
    w.pages["project"].tabs.setCurrentIndex(1)
    pp = w.pages["project"].form
    pp.task_files.setChecked(True)
    clock = QElapsedTimer()
    gaps: list[float] = []
    last = [0.0]

    def tick():
        now = clock.nsecsElapsed() / 1e6
        gaps.append(now - last[0])
        last[0] = now
        if not pp._reading and gaps and clock.elapsed() > 200 and not pp.task_error.text().startswith("Reading"):
            app.quit()

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    clock.start()
    t0 = time.perf_counter()
    timer.start()
    QTimer.singleShot(0, lambda: (pp.train_file.setText(str(train)), pp.dev_file.setText(str(dev)), pp.validate()))
    app.exec()
    seconds = time.perf_counter() - t0
    ok = pp.task_error.text() == ""
    w.close()
    return {
        "seconds_until_checked": seconds,
        "max_gap_ms": max(gaps),
        "p99_gap_ms": sorted(gaps)[int(0.99 * (len(gaps) - 1))],
        "ticks": len(gaps),
        "form_ok": ok,
        "label_counts": pp.label_counts.text(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--gui-only", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dynastudio-huge-") as tmp:
        tmp = Path(tmp)
        train, dev = tmp / "train.csv", tmp / "dev.csv"
        write_csv(train, a.rows)
        with open(train, encoding="utf-8") as f, open(dev, "w", encoding="utf-8") as g:
            for i, line in enumerate(f):
                g.write(line)
                if i >= 1000:
                    break
        out = {"rows": a.rows, "file_mb": train.stat().st_size / 1e6}
        if not a.gui_only:
            t0 = time.perf_counter()
            p = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dynastudio.core.cli",
                    "new",
                    str(tmp / "proj"),
                    "--model",
                    "builtin:minilm",
                    "--train",
                    str(train),
                    "--dev",
                    str(dev),
                ],
                capture_output=True,
                text=True,
            )
            out["new_seconds"] = time.perf_counter() - t0
            out["new_exit"] = p.returncode
            out["new_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            out["new_progress_lines"] = [l for l in p.stderr.splitlines() if "tokenized" in l]
            print(
                f"new: exit {p.returncode}, {out['new_seconds']:.1f} s, peak {out['new_peak_rss_mb']:.0f} MB",
                flush=True,
            )
            if p.returncode != 0:
                print(p.stderr[-2000:], file=sys.stderr)
        out["gui"] = gui_gaps(train, dev)
        print(
            f"GUI: checked in {out['gui']['seconds_until_checked']:.1f} s, longest gap {out['gui']['max_gap_ms']:.0f} ms, "
            f"p99 {out['gui']['p99_gap_ms']:.0f} ms, form ok {out['gui']['form_ok']}",
            flush=True,
        )
    out["load_avg_1m"] = os.getloadavg()[0]
    res = REPO / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "huge_csv.json").write_text(json.dumps(out, indent=2))
    g = out["gui"]
    md = [
        f"A {a.rows:,}-row CSV ({out['file_mb']:.0f} MB).",
        "",
        "| step | time | peak memory / longest GUI gap |",
        "|---|---|---|",
    ]
    if "new_seconds" in out:
        md.append(
            f"| `dynastudio new` (read, check, tokenize, cache) | {out['new_seconds']:.1f} s | {out['new_peak_rss_mb']:.0f} MB |"
        )
    md.append(
        f"| Project page: pick the file, the form reads and checks it | {g['seconds_until_checked']:.1f} s | "
        f"longest gap {g['max_gap_ms']:.0f} ms (p99 {g['p99_gap_ms']:.0f} ms) |"
    )
    (res / "huge_csv.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
