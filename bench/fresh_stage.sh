#!/bin/bash
# Does a stage step slower when the earlier stages ran in the same process? Re-runs the first steps of STAGE of a
# finished project (a copy of it) in a fresh `dynastudio run` process and compares each step's time with the same
# step (the same batch) of the project's own run, from metrics.jsonl.
#   flock /tmp/torch.lock bash bench/fresh_stage.sh PROJECT_DIR [STAGE=depth] [SECONDS=200]
# Prints the mean step times and their ratio. Nothing else may run on the machine meanwhile.
set -euo pipefail
project=$1 stage=${2:-depth} seconds=${3:-200}
py=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
copy=$(mktemp -d)/project
cp -r "$project" "$copy"
mv "$copy/metrics.jsonl" "$copy/metrics.first.jsonl"
"$py" -c "from dynastudio.core.project import Project; Project.open('$copy').reopen('$stage')"
timeout -s INT "$seconds" "$py" -m dynastudio.core.cli run "$copy" --until "$stage" --events none || true
"$py" - "$copy" "$stage" <<'PY'
import json, statistics, sys
copy, stage = sys.argv[1], sys.argv[2]
def times(path):
    rows = [json.loads(line) for line in open(path)]
    return {r["step"]: r["time"] for r in rows if r["kind"] == "step" and r["stage"] == stage}
a, b = times(f"{copy}/metrics.first.jsonl"), times(f"{copy}/metrics.jsonl")
steps = [s for s in sorted(set(a) & set(b)) if s > 2 and s - 1 in a and s - 1 in b]
da, db = [a[s] - a[s - 1] for s in steps], [b[s] - b[s - 1] for s in steps]
print(f"{len(steps)} {stage} steps: first run {statistics.mean(da):.3f} s a step, fresh process "
      f"{statistics.mean(db):.3f} s, ratio {statistics.mean(da) / statistics.mean(db):.3f} "
      f"(median of the paired ratios {statistics.median(x / y for x, y in zip(da, db)):.3f})")
PY
rm -rf "$(dirname "$copy")"
