"""A registered job in a child process of a front end: `python -m dynastudio.core.child JOB DIR`.

The request comes as one JSON line on stdin; every event goes out as a JSON line on stdout, the last
one a JobEnded with the result. A later "stop" line on stdin, or stdin closing (the front end is gone),
asks the job to stop at its next check. Anything else that writes to stdout (a library's print) is
sent to stderr, so stdout carries nothing but events.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m dynastudio.core.child JOB DIR  (the request as a JSON line on stdin)", file=sys.stderr)
        return 2
    name, folder = argv
    from . import threads

    threads.set_wait_policy()  # before the job imports torch: OpenMP reads it once, when it loads
    # our own copy of stdout for events; fd 1 becomes stderr for everyone else
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lock = threading.Lock()

    from .events import JobEnded, LogMessage, StopToken, event_to_json

    def emit(event) -> None:
        line = event_to_json(event) + "\n"
        with lock:
            out.write(line)
            out.flush()

    stop = StopToken()
    first = sys.stdin.readline()

    def listen() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                stop.set()
        stop.set()  # stdin closed: whoever started us is gone

    threading.Thread(target=listen, name="dynastudio-stdin", daemon=True).start()
    import importlib

    from . import jobs, registry
    from .errors import Cancelled, UserError

    # jobs that plug-ins (and the studio's tests) add: modules that register them when imported
    for module in filter(None, (m.strip() for m in os.environ.get("DYNASTUDIO_JOB_MODULES", "").split(","))):
        importlib.import_module(module)
    from .requests import request_from_json, result_to_json

    code = 0
    try:
        job = registry.JOBS.get(name)
        if job is None:
            raise UserError(f"unknown job '{name}': choose one of {', '.join(registry.JOBS)}")
        request = request_from_json(first, job.request_type) if first.strip() else None
        sink = emit
        stage_of_a_run = name == "run-stage"
        if stage_of_a_run:
            from .stageproc import become_stage_child

            become_stage_child()
        if job.opens_project:  # a job that computes: its share of the cores, said in the log when it shares them
            n, why = threads.configure_threads(name)
            if line := threads.sharing_line(n, why):
                emit(LogMessage(line))
            sink = threads.Rebalancer(emit, n) if job.trains or stage_of_a_run else emit
        result = jobs.run(name, folder, request, sink, stop)
        end = JobEnded("done", result_to_json(result))
    except Cancelled:
        end, code = JobEnded("stopped", message="stopped by request"), 130
    except UserError as exc:
        end, code = JobEnded("failed", message=str(exc)), 2
    except Exception as exc:  # a bug: its traceback goes with it
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        end, code = JobEnded("failed", message=f"{type(exc).__name__}: {exc}", internal=True, traceback=tb), 1
    emit(end)
    out.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
