"""Produce Open edX events to Kafka through edx-event-bus-kafka's own producer.

Usage:
  python kafka_produce.py --bootstrap HOST:PORT --registry URL --topic TOPIC [--prefix P]
                          [--key-field PATH] --events-file F [--service NAME] [--timeout S] [--verbose]

  --topic      the configured (un-prefixed) topic; messages go to "P-TOPIC" with --prefix P, else TOPIC.
  --key-field  event_key_field, a period-delimited path into the event data (e.g. xblock_info.usage_key).
               Used for every event of the file; when omitted, each event's own "event_key_field" is used.
  --service    EVENTS_SERVICE_NAME (metadata source "openedx/NAME/web", and the Kafka client.id).
  --timeout    bound (seconds, default 30) of the final flush; the library's prepare_for_shutdown()
               flushes with no bound, so the flush it calls is bounded by this script.

Events file F: JSON list of
  {"event_type": "<type>", "data": <datum JSON>, "event_key_field": "<path>" (optional),
   "metadata": {<optional overrides: id, time, minorversion, source, sourcehost, sourcelib>}}
data (the "datum" form of shared/avro-vectors.json) becomes typed event data with openedx-events'
AvroSignalDeserializer.from_dict; then edx_event_bus_kafka.create_producer().send(signal=..., topic=...,
event_key_field=..., event_data=..., event_metadata=...) serializes key and value with confluent-kafka's
AvroSerializer (schemas auto-registered in the registry, topic-record subject names) and produces;
finally prepare_for_shutdown() flushes and delivery reports are collected.

Output (stdout), one JSON line per event, in file order, after the flush:
  {"index": i, "event_type": str, "topic": "<full topic>", "partition": int, "offset": int,
   "key": <key value as in the datum: string or integer>, "key_schema_id": int, "value_schema_id": int,
   "headers": {"ce_type": "...", ...: str}, "metadata": {<metadata JSON, as redis_produce.py>}}
  and on failure (serialization, registry or delivery error; the library logs and drops the event):
  {"index": i, "event_type": str, "topic": ..., "partition": null, "offset": null, "key": ...,
   "metadata": {...}, "error": "..."}
Exit: 0 all delivered; 1 some event failed; other non-zero for usage/setup errors.
"""
import argparse
import struct
import sys

import oev_common as common


class _DeliveryRecorder:
    """Wraps confluent_kafka.Producer to see what the library produces and its delivery reports."""

    def __init__(self, producer, flush_timeout):
        self._producer = producer
        self._flush_timeout = flush_timeout
        self.sent = []  # one dict per produce() call

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None, **kwargs):
        record = {"topic": topic, "key_bytes": key, "value_bytes": value, "headers": headers,
                  "delivered": False, "err": None, "partition": None, "offset": None}
        self.sent.append(record)

        def report(err, msg):
            record["delivered"] = True
            record["err"] = err
            if err is None:
                record["partition"], record["offset"] = msg.partition(), msg.offset()
            if on_delivery is not None:
                on_delivery(err, msg)

        return self._producer.produce(topic, key=key, value=value, headers=headers, on_delivery=report, **kwargs)

    def flush(self, timeout=-1):
        bounded = self._flush_timeout if timeout is None or timeout < 0 else min(timeout, self._flush_timeout)
        return self._producer.flush(bounded)

    def __getattr__(self, name):
        return getattr(self._producer, name)


def schema_id(framed):
    if isinstance(framed, (bytes, bytearray)) and len(framed) >= 5 and framed[0] == 0:
        return struct.unpack(">I", framed[1:5])[0]
    return None


def key_from_datum(datum, path):
    cur = datum
    for name in path.split("."):
        if not isinstance(cur, dict) or name not in cur:
            return None
        cur = cur[name]
    return cur


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--prefix", default=None)
    p.add_argument("--key-field", default=None)
    p.add_argument("--events-file", required=True)
    p.add_argument("--service", default=None)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    common.setup_stdio(args.verbose)
    common.configure_django(
        EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS=args.bootstrap,
        EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=args.registry,
        EVENT_BUS_TOPIC_PREFIX=args.prefix,
        EVENTS_SERVICE_NAME=args.service,
        EVENT_BUS_KAFKA_AUDIT_LOGGING_ENABLED=False,
    )
    errors = common.ErrorCollector().install("edx_event_bus_kafka")

    import edx_event_bus_kafka
    from edx_event_bus_kafka.internal.config import get_full_topic

    events = common.load_events_file(args.events_file)
    producer = edx_event_bus_kafka.create_producer()
    if producer is None:
        sys.exit("edx_event_bus_kafka.create_producer() returned None (settings or library missing?)")
    recorder = _DeliveryRecorder(producer.producer, args.timeout)
    producer.producer = recorder
    full_topic = get_full_topic(args.topic)

    lines, records = [], []
    for i, ev in enumerate(events):
        signal = common.signal_for(ev["event_type"])
        key_field = args.key_field or ev.get("event_key_field")
        line = {"index": i, "event_type": signal.event_type, "topic": full_topic, "partition": None,
                "offset": None, "key": key_from_datum(ev["data"], key_field) if key_field else None}
        lines.append(line)
        records.append(None)
        if not key_field:
            line["metadata"] = None
            line["error"] = "no event_key_field (give --key-field or the event's event_key_field)"
            continue
        try:
            event_data = common.typed_from_datum(signal, ev["data"])
            metadata = common.make_metadata(signal, ev.get("metadata"))
        except Exception as e:  # bad input datum: report, keep going
            line["metadata"] = None
            line["error"] = "datum->typed: " + common.error_text(e)
            continue
        line["metadata"] = common.metadata_json(metadata)
        before = len(recorder.sent)
        producer.send(signal=signal, topic=args.topic, event_key_field=key_field,
                      event_data=event_data, event_metadata=metadata)
        logged = errors.take()
        if len(recorder.sent) > before:
            records[i] = recorder.sent[-1]
        if logged:
            line["error"] = "; ".join(r.getMessage() for r in logged)

    producer.prepare_for_shutdown()  # flush (bounded by --timeout through the recorder)
    late = errors.take()
    failed = 0
    for line, rec in zip(lines, records):
        if rec is not None:
            line["key_schema_id"] = schema_id(rec["key_bytes"])
            line["value_schema_id"] = schema_id(rec["value_bytes"])
            line["headers"] = {k: v.decode("utf-8") for k, v in (rec["headers"] or {}).items()}
            if rec["delivered"] and rec["err"] is None:
                line["partition"], line["offset"] = rec["partition"], rec["offset"]
            elif "error" not in line:
                line["error"] = f"delivery failed: {rec['err']}" if rec["delivered"] else \
                    f"not delivered within {args.timeout}s"
        elif "error" not in line:
            line["error"] = "; ".join(r.getMessage() for r in late) or "nothing was produced"
        if "error" in line:
            failed += 1
        common.emit_line(line)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
