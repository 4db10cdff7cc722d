#!/bin/bash
# Why does a stage run slower after other stages in the same process? Two runs on copies of a finished project:
#   A: the width stage, then the depth stage, in one `dynastudio run` process;
#   B: the depth stage alone, in a fresh process.
# Once each reaches depth step 30: `perf stat` (page faults) for 60 s and `perf record -g` for 20 s; then compares
# the depth steps' times (same batches) and the main thread's share of samples in glibc's malloc and in torch's
# dropout draw. Needs perf (perf_event_paranoid <= 2). Nothing else may run on the machine meanwhile.
#   flock /tmp/torch.lock bash bench/stage_age.sh PROJECT_DIR [WORK_DIR]
set -u
src=$1 work=${2:-$(mktemp -d)}
py=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
cd "$work"
times() { # stage metrics of a copy against the original run's
  "$py" - "$1" <<'PY'
import json, statistics, sys
def t(path):
    d = {}
    for line in open(path):
        r = json.loads(line)
        if r["kind"] == "step" and r["stage"] == "depth":
            d[r["step"]] = r["time"]
    return d
d = t(f"{sys.argv[1]}/metrics.jsonl")
steps = [s for s in sorted(d) if s > 2 and s - 1 in d]
print(f"{sys.argv[1]}: {len(steps)} depth steps, {statistics.mean(d[s] - d[s - 1] for s in steps):.3f} s a step")
PY
}
for name in A B; do
  rm -rf $name; cp -r "$src" $name; rm -f $name/metrics.jsonl
  stage=width; [ $name = B ] && stage=depth
  "$py" -c "from dynastudio.core.project import Project; Project.open('$name').reopen('$stage')"
  "$py" -m dynastudio.core.cli run $name --until depth --events none > $name.log 2>&1 &
  pid=$!
  until grep -q '"stage": "depth", "step": 30,' $name/metrics.jsonl 2>/dev/null; do
    sleep 2; kill -0 $pid 2>/dev/null || { echo "$name: the run ended early, see $work/$name.log"; exit 1; }
  done
  grep VmRSS /proc/$pid/status
  perf stat -e page-faults,task-clock -p $pid -- sleep 60 2> $name.stat
  perf record -g -o $name.perf -p $pid -- sleep 20 > /dev/null 2>&1
  kill -INT $pid; wait $pid
  times $name
  grep -E "page-faults|task-clock" $name.stat
  perf script -i $name.perf -F tid,ip,sym,dso -G 2>/dev/null | awk -v T=$pid '$1==T {s=$3; if (s=="[unknown]") s=$4; n++;
    if (s ~ /malloc|_int_free|unlink_chunk|cfree/) m++; if (s ~ /bernoulli|random64/) d++}
    END {printf "main thread: %d samples, glibc malloc/free %.1f%%, dropout draw %.1f%%\n", n, 100*m/n, 100*d/n}'
done
