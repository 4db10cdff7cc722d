#!/usr/bin/env bash
# The GPU check, in one script for a session that has a CUDA GPU: the CUDA tests, the step benchmark, torchrun with
# one process, and a paper-profile SST-2 run on all 67,349 rows with the built-in model; every step has a time limit.
#
#   bash bench/gpu_check.sh                  # everything, within GPU_CHECK_SECONDS (default 570: under 10 minutes)
#   bash bench/gpu_check.sh tests steps      # only some steps: tests, steps, torchrun, sst2
#   GPU_CHECK_SECONDS=3000 bash bench/gpu_check.sh sst2    # the SST-2 run with more time; run again to resume it
#
# Writes bench/results/gpu_check/ (logs, gpu_steps.{json,md}, sst2 stage times and grid, summary.md), and copies it
# to $OUT when that is set (the device machine's return folder). The SST-2 project lives in $GPU_CHECK_WORK
# (default /tmp/gpu_check), so a second call resumes a run that ran out of time. Without a CUDA GPU it says so in one
# line and exits 3, having run nothing.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
RES=$ROOT/bench/results/gpu_check
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
BUDGET=${GPU_CHECK_SECONDS:-570}
START=$(date +%s)
STEPS=${*:-tests steps torchrun sst2}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing was run" >&2
    exit 3
fi
mkdir -p "$RES" "$WORK"
SUMMARY=$RES/summary.md
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

left() { echo $((BUDGET - ($(date +%s) - START))); }
# limit NAME SECONDS: the smaller of SECONDS and what the budget has left (at least 10 s)
limit() { local l; l=$(left); [ "$2" -lt "$l" ] && l=$2; [ "$l" -lt 10 ] && l=10; echo "$l"; }
record() { echo "| $1 | $2 | $3 s | $4 |" >>"$SUMMARY"; }
run_step() {  # run_step NAME SECONDS COMMAND...: its output in NAME.log, its outcome in the summary
    local name=$1 secs t0 rc outcome
    secs=$(limit "$1" "$2")
    shift 2
    if [ "$(left)" -le 10 ]; then record "$name" "not run" 0 "the time budget was spent"; return; fi
    t0=$(date +%s)
    timeout --kill-after=20 "$secs" "$@" >"$RES/$name.log" 2>&1
    rc=$?
    case $rc in
        0) outcome=passed ;;
        124 | 137 | 130)
            if [ "$name" = sst2 ]; then outcome="stopped at the time limit (resumable: call again)"; else
                outcome="timed out after $secs s"; fi ;;
        *) outcome="failed (exit $rc)" ;;
    esac
    record "$name" "$outcome" $(($(date +%s) - t0)) "$(tail -n 1 "$RES/$name.log" | tr '|' '/' | cut -c1-160)"
    echo "gpu_check: $name: $outcome" >&2
}

{
    echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>/dev/null ||
        echo "nvidia-smi: not found"
    "$PY" -c "import torch as t; print('torch', t.__version__, 'CUDA', t.version.cuda, t.cuda.get_device_name(0),
        'capability', t.cuda.get_device_capability(0))"
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    echo '```'
    echo
    echo "Budget ${BUDGET} s. Steps: $STEPS. Nothing else ran on the machine unless said here."
    echo
    echo "| step | outcome | seconds | last line of its log |"
    echo "|---|---|---|---|"
} >"$SUMMARY"

for step in $STEPS; do
    case $step in
        tests)
            run_step tests 240 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_cuda.py
            ;;
        steps)
            run_step gpu_steps 240 "$PY" bench/gpu_steps.py --steps 10 --warmup 3 --out "$RES"
            ;;
        torchrun)
            rm -rf "$WORK/torchrun"
            "$PY" -m dynastudio.core.cli new "$WORK/torchrun" --demo >"$RES/torchrun-new.log" 2>&1
            # the README's line (docs/cli.md, training-at-scale.md) with one process
            run_step torchrun 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
                -m dynastudio.core.cli run "$WORK/torchrun" --events none
            ;;
        sst2)
            GLUE=${GLUE_DIR:-}
            for d in "$ROOT/../shared/data/glue" "$ROOT/shared/data/glue"; do
                [ -z "$GLUE" ] && [ -f "$d/SST-2/train.tsv" ] && GLUE=$d
            done
            if [ -z "$GLUE" ]; then
                record sst2 "not run" 0 "no GLUE folder (set GLUE_DIR to the folder with SST-2/train.tsv)"
                continue
            fi
            P=$WORK/sst2
            if [ ! -f "$P/project.json" ]; then
                "$PY" -m dynastudio.core.cli new "$P" --model builtin:minilm --task sst2 --data-dir "$GLUE" \
                    --profile paper >"$RES/sst2-new.log" 2>&1 || { record sst2 "failed" 0 "see sst2-new.log"; continue; }
            fi
            # a run cut by the time limit is stopped (SIGINT: it saves a checkpoint); the next call resumes it
            S=$(limit sst2 100000)
            [ "$S" -gt 120 ] || { record sst2 "not run" 0 "under 2 minutes of the budget left"; continue; }
            run_step sst2 "$S" timeout --signal=INT --kill-after=45 "$((S - 60))" \
                "$PY" -m dynastudio.core.cli run "$P" --events jsonl
            "$PY" - "$P" "$RES" <<'EOF' >>"$SUMMARY" 2>&1
import json, sys
from pathlib import Path

p, res = Path(sys.argv[1]), Path(sys.argv[2])
state = json.loads((p / "state.json").read_text()) if (p / "state.json").is_file() else {}
print("\n## SST-2, paper profile, builtin:minilm, all 67,349 training rows\n")
print("| stage | seconds | steps |\n|---|---|---|")
for stage, info in (state.get("stages") or state).items():
    if isinstance(info, dict):
        print(f"| {stage} | {info.get('seconds', '-')} | {info.get('steps', '-')} |")
if (p / "results.json").is_file():
    r = json.loads((p / "results.json").read_text())
    (res / "sst2_results.json").write_text(json.dumps(r, indent=1))
    print(f"\nGrid ({r['metric']}, dev {r['dev_examples']} rows, scores in {r.get('precision', 'fp32')}):\n")
    print("| sub-network | score | FLOPs rel. |\n|---|---|---|")
    for row in r["rows"]:
        print(f"| {row['label']} | {row['value']:.4f} | {row['flops_rel']:.2f} |")
else:
    print("\nNo grid yet: the run did not reach the evaluate stage in this call; call again to resume it.")
EOF
            ;;
        *)
            echo "gpu_check: unknown step '$step' (tests, steps, torchrun, sst2)" >&2
            exit 2
            ;;
    esac
done

echo >>"$SUMMARY"
echo "Total $(($(date +%s) - START)) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)." >>"$SUMMARY"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/gpu_check" && cp -r "$RES"/. "$OUT/gpu_check/"
fi
cat "$SUMMARY"
! grep -q "| failed\|| timed out" "$SUMMARY" || exit 1
