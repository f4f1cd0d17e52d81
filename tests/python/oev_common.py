"""Shared helpers of the interop scripts in tests/python (not a script itself).

Everything that touches event data goes through openedx-events' own machinery, so that the
scripts check the *typed* Python round trip, not just Avro bytes:

  datum JSON  --AvroSignalDeserializer.from_dict-->  typed event data (attrs classes, keys, datetimes)
  typed data  --AvroSignalSerializer.to_dict------>  datum JSON

"Datum JSON" is the form of the "datum" entries of shared/avro-vectors.json: the Avro record of the
event's top-level data fields, nested records as objects, optional fields present with null,
course/usage keys and UUIDs as strings, datetimes as Python isoformat strings, maps as objects,
arrays as lists (no bytes fields exist in these schemas).

"Metadata JSON" is openedx-events' EventsMetadata.to_json_data():
  {"event_type": str, "id": str (hyphenated UUID), "minorversion": int, "source": str,
   "sourcehost": str, "time": str (isoformat, UTC), "sourcelib": [int, int, int]}
"""
import json
import logging
import sys
import uuid
from datetime import datetime, timezone


def configure_django(**extra):
    """Configure a minimal Django for openedx-events and load every signal definition."""
    import django
    from django.conf import settings

    base = dict(
        DEBUG=False,
        INSTALLED_APPS=["openedx_events"],
        LOGGING_CONFIG=None,
        USE_TZ=True,
        OPENEDX_TELEMETRY=[],  # no New Relic / Datadog backends (silences a warning per run)
    )
    base.update({k: v for k, v in extra.items() if v is not None})
    settings.configure(**base)
    django.setup()
    from openedx_events.tooling import load_all_signals
    load_all_signals()


def setup_stdio(verbose=False):
    """stdout: UTF-8 JSON lines only. Logs (WARNING+, or INFO+ with verbose) go to stderr."""
    sys.stdout.reconfigure(encoding="utf-8", errors="strict")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if verbose else logging.WARNING,
        format="[%(name)s] %(levelname)s %(message)s",
    )


class ErrorCollector(logging.Handler):
    """Collects ERROR records of the event-bus libraries (they log and swallow their failures)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def take(self):
        out, self.records = self.records, []
        return out

    def install(self, *logger_names):
        for name in logger_names:
            logging.getLogger(name).addHandler(self)
        return self


def emit_line(obj):
    """Print one JSON line on stdout (UTF-8, not ASCII-escaped) and flush."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def signal_for(event_type):
    from openedx_events.tooling import OpenEdxPublicSignal
    try:
        return OpenEdxPublicSignal.get_signal_by_type(event_type)
    except KeyError:
        raise SystemExit(f"unknown event type (not in this openedx-events): {event_type}")


def datum_from_typed(signal, event_data):
    """Typed event data (signal kwargs) -> datum JSON, with openedx-events' serializer."""
    from openedx_events.event_bus.avro.serializer import AvroSignalSerializer
    return AvroSignalSerializer(signal).to_dict(event_data)


def typed_from_datum(signal, datum):
    """Datum JSON -> typed event data (signal kwargs), with openedx-events' deserializer."""
    from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer
    return AvroSignalDeserializer(signal).from_dict(datum)


def metadata_json(metadata):
    """EventsMetadata -> metadata JSON (to_json_data; sourcelib as a list of ints)."""
    out = metadata.to_json_data()
    out["sourcelib"] = list(out["sourcelib"])
    return out


def make_metadata(signal, overrides=None):
    """EventsMetadata for a send: generated like openedx-events does (signal.generate_signal_metadata),
    with any of id / time / minorversion / source / sourcehost / sourcelib taken from `overrides`
    (metadata JSON form; time may end in Z or carry another offset, it is normalised to UTC)."""
    from openedx_events.data import EventsMetadata
    overrides = dict(overrides or {})
    if not overrides:
        return signal.generate_signal_metadata()
    kwargs = {"event_type": signal.event_type, "minorversion": signal.minor_version}
    if "id" in overrides:
        kwargs["id"] = uuid.UUID(overrides["id"])
    if "time" in overrides:
        t = datetime.fromisoformat(overrides["time"].replace("Z", "+00:00"))
        kwargs["time"] = t.astimezone(timezone.utc)
    if "minorversion" in overrides:
        kwargs["minorversion"] = int(overrides["minorversion"])
    for k in ("source", "sourcehost"):
        if k in overrides:
            kwargs[k] = overrides[k]
    if "sourcelib" in overrides:
        sl = overrides["sourcelib"]
        kwargs["sourcelib"] = tuple(int(x) for x in (sl.split(".") if isinstance(sl, str) else sl))
    return EventsMetadata(**kwargs)


def load_events_file(path):
    """Events file: JSON list of {"event_type": str, "data": <datum JSON>,
    optional "metadata": {<metadata JSON overrides>}, optional "event_key_field": str}."""
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    if not isinstance(events, list):
        raise SystemExit(f"{path}: expected a JSON list of events")
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or "event_type" not in ev or "data" not in ev:
            raise SystemExit(f"{path}: entry {i} needs 'event_type' and 'data'")
    return events


def error_text(err):
    return f"{type(err).__name__}: {err}"
