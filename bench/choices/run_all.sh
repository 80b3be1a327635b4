#!/usr/bin/env bash
# Reproduce every number in CHOICES.md (~5 min on 2 cores). Loopback only.
# Needs: wrk (apt-get install wrk), taskset, and in the venv:
#   pip install orjson msgspec granian uvicorn[standard] starlette tqdm rich
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../../.venv/bin/python}
mkdir -p results
: > results/server.log
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(lscpu | sed -n 's/^Model name:\s*//p') x $(nproc)"
  echo "kernel: $(uname -r)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  $PY -c 'import sys; print("python:", sys.version.split()[0])'
  $PY -m pip list 2>/dev/null | grep -iE '^(orjson|msgspec|granian|uvicorn|uvloop|httptools|starlette|tqdm|rich) '
} > results/env.txt
$PY bench_json.py          --out results/json.md
$PY bench_json.py --no-gc  --out results/json_nogc.md --repeats 3
$PY bench_gzip.py          --out results/gzip.md
$PY bench_progress.py      --out results/progress.md
$PY bench_asgi_overhead.py --out results/asgi_overhead.md
$PY bench_asgi_load.py     --out results/asgi_load.md --duration 5 --repeats 3
