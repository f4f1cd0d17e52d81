#!/usr/bin/env bash
# tests/python/run_bench.sh -- run the Python baseline benchmarks (kept outside the repo, in
# ../shared/bench relative to the repo root) with the venv of tests/python/setup.sh.
#
# Usage:   bash tests/python/run_bench.sh MODE [N]
#   MODE null | redis | kafka  -> python ../shared/bench/py_baseline.py N MODE
#                                 (redis: REDIS_URL, default redis://127.0.0.1:6379/;
#                                  kafka: KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL must be set)
#   MODE avro                  -> python ../shared/bench/py_avro.py N
#   N defaults to 2000.
# Env:     OEV_SHARED  the shared directory (default: <repo>/../shared); OEV_VENV as for setup.sh.
# Output:  the benchmark's own lines on stdout (setup progress on stderr), e.g.
#   mode=redis n=2000 seconds=0.339 us_per_event=169.5 events_per_s=5899
#   xblock serializer ns_per_event=60510   (py_avro.py: one line per event and path)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
shared=${OEV_SHARED:-$repo/../shared}
mode=${1:?usage: run_bench.sh null|redis|kafka|avro [N]}
n=${2:-2000}

py=$(bash "$here/setup.sh" | tail -n 1)
case "$mode" in
    null|redis|kafka) exec "$py" "$shared/bench/py_baseline.py" "$n" "$mode" ;;
    avro) exec "$py" "$shared/bench/py_avro.py" "$n" ;;
    *) echo "unknown mode: $mode (null, redis, kafka or avro)" >&2; exit 2 ;;
esac
