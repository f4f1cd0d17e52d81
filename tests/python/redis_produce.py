"""Produce Open edX events to Redis Streams through edx-event-bus-redis's own producer.

Usage:
  python redis_produce.py --url redis://127.0.0.1:6379/ --topic TOPIC [--prefix P]
                          --events-file F [--service NAME] [--maxlen N] [--verbose]

  --topic    the configured (un-prefixed) topic; the stream is "P-TOPIC" with --prefix P, else TOPIC
             (EVENT_BUS_TOPIC_PREFIX semantics, applied by edx-event-bus-redis itself).
  --service  EVENTS_SERVICE_NAME (metadata source "openedx/NAME/web"); unset by default, which gives
             "openedx/SERVICE_NAME_UNSET/web".
  --maxlen   EVENT_BUS_REDIS_STREAM_MAX_LEN (default: the library's 10000).

Events file F: JSON list of
  {"event_type": "<type>", "data": <datum JSON>, "metadata": {<optional overrides>}}
  data is in the "datum" form of shared/avro-vectors.json. It is turned into typed event data with
  openedx-events' AvroSignalDeserializer.from_dict, then handed to
  edx_event_bus_redis.create_producer().send(signal=..., topic=..., event_key_field=..., event_data=...,
  event_metadata=...), which serializes it (openedx-events' serializer) and XADDs it.
  metadata overrides (any of id, time, minorversion, source, sourcehost, sourcelib) are optional;
  the rest is generated like openedx-events does (uuid1 id, now in UTC, host name, library version).

Output (stdout), one JSON line per event, in file order:
  {"index": i, "event_type": str, "stream": "<full topic>", "stream_id": "<ms-seq>",
   "metadata": {"event_type", "id", "minorversion", "source", "sourcehost", "time", "sourcelib": [int,...]}}
  and on failure (the library logs and swallows producer errors; they are caught from its log):
  {"index": i, "event_type": str, "stream": ..., "stream_id": null, "metadata": {...}, "error": "..."}
Exit: 0 all sent; 1 some event failed; other non-zero for usage/setup errors.
"""
import argparse
import sys

import oev_common as common


class _StreamIdRecorder:
    """Wraps the producer's walrus Database to see the id XADD returned (the library drops it)."""

    def __init__(self, db):
        self._db = db
        self.ids = []

    def Stream(self, key):  # noqa: N802 (walrus API name)
        stream = self._db.Stream(key)
        recorder = self

        class _Stream:
            def add(self, *args, **kwargs):
                msg_id = stream.add(*args, **kwargs)
                recorder.ids.append(msg_id)
                return msg_id

            def __getattr__(self, name):
                return getattr(stream, name)

        return _Stream()

    def __getattr__(self, name):
        return getattr(self._db, name)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--prefix", default=None)
    p.add_argument("--events-file", required=True)
    p.add_argument("--service", default=None)
    p.add_argument("--maxlen", type=int, default=None)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    common.setup_stdio(args.verbose)
    common.configure_django(
        EVENT_BUS_REDIS_CONNECTION_URL=args.url,
        EVENT_BUS_TOPIC_PREFIX=args.prefix,
        EVENTS_SERVICE_NAME=args.service,
        EVENT_BUS_REDIS_STREAM_MAX_LEN=args.maxlen,
        EVENT_BUS_REDIS_AUDIT_LOGGING_ENABLED=False,
    )
    errors = common.ErrorCollector().install("edx_event_bus_redis")

    import edx_event_bus_redis
    from edx_event_bus_redis.internal.config import get_full_topic

    events = common.load_events_file(args.events_file)
    producer = edx_event_bus_redis.create_producer()
    if producer is None:
        sys.exit("edx_event_bus_redis.create_producer() returned None (no connection URL?)")
    recorder = _StreamIdRecorder(producer.client)
    producer.client = recorder
    full_topic = get_full_topic(args.topic)

    failed = 0
    for i, ev in enumerate(events):
        signal = common.signal_for(ev["event_type"])
        line = {"index": i, "event_type": signal.event_type, "stream": full_topic, "stream_id": None}
        try:
            event_data = common.typed_from_datum(signal, ev["data"])
            metadata = common.make_metadata(signal, ev.get("metadata"))
        except Exception as e:  # bad input datum: report, keep going
            line["metadata"] = None
            line["error"] = "datum->typed: " + common.error_text(e)
            failed += 1
            common.emit_line(line)
            continue
        line["metadata"] = common.metadata_json(metadata)
        before = len(recorder.ids)
        producer.send(signal=signal, topic=args.topic, event_key_field=ev.get("event_key_field", ""),
                      event_data=event_data, event_metadata=metadata)
        logged = errors.take()
        if len(recorder.ids) > before:
            msg_id = recorder.ids[-1]
            line["stream_id"] = msg_id.decode() if isinstance(msg_id, bytes) else str(msg_id)
        if logged or line["stream_id"] is None:
            line["error"] = "; ".join(r.getMessage() for r in logged) or "no stream id returned"
            failed += 1
        common.emit_line(line)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
