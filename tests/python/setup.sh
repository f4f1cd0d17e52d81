#!/usr/bin/env bash
# tests/python/setup.sh -- create (or reuse) the Python venv of the interoperability tests.
#
# Usage:   bash tests/python/setup.sh
# Env:     OEV_VENV    venv directory (default: <repo>/target/py-venv)
#          OEV_PYTHON  interpreter that creates the venv (default: python3)
# Output:  progress goes to stderr; stdout gets exactly one line, the venv's python path
#          (so `PY=$(bash tests/python/setup.sh)` works; callers may also take the last line).
# Exit:    0 when the venv is ready and every package imports, non-zero otherwise.
#
# Idempotent: the venv is (re)built only when the stamp file (<venv>/.oev-stamp) does not hold
# the hash of requirements.txt + this script + the interpreter version. Concurrent callers
# (e.g. Rust tests running in parallel) serialise on a flock, so the venv is built once.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${OEV_VENV:-$repo/target/py-venv}
base_python=${OEV_PYTHON:-python3}
req=$here/requirements.txt

log() { echo "[py-setup] $*" >&2; }

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

want=$( { cat "$req" "$here/setup.sh"; "$base_python" --version 2>&1; } | sha256sum | cut -d' ' -f1)
stamp=$venv/.oev-stamp

check_imports() {
    "$venv/bin/python" - <<'PY'
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["openedx_events"], EVENTS_SERVICE_NAME="py-setup-check",
                   EVENT_BUS_REDIS_CONNECTION_URL="redis://127.0.0.1:6379/")
django.setup()
import confluent_kafka, fastavro, redis, walrus, opaque_keys, attr  # noqa: F401
from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: F401
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: F401
import openedx_events
from openedx_events.tooling import load_all_signals, OpenEdxPublicSignal
from openedx_events.event_bus.avro.serializer import AvroSignalSerializer  # noqa: F401
from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer  # noqa: F401
import edx_event_bus_redis
from edx_event_bus_redis.internal.message import RedisMessage  # noqa: F401
import edx_event_bus_kafka
from edx_event_bus_kafka.internal.utils import _get_metadata_from_headers  # noqa: F401
load_all_signals()
print(f"[py-setup] openedx-events {openedx_events.__version__}, edx-event-bus-redis "
      f"{edx_event_bus_redis.__version__}, edx-event-bus-kafka {edx_event_bus_kafka.__version__}, "
      f"confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]}), "
      f"fastavro {fastavro.__version__}, Django {django.__version__}, "
      f"{len(OpenEdxPublicSignal.all_events())} signals", file=__import__('sys').stderr)
PY
}

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "venv up to date: $venv"
else
    log "building venv at $venv"
    rm -rf "$venv"
    "$base_python" -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req" >&2
    check_imports
    echo "$want" > "$stamp"
    log "venv ready"
fi

echo "$venv/bin/python"
