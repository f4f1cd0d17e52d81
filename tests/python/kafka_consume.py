"""Consume Open edX events from Kafka with edx-event-bus-kafka's own consumer.

Usage:
  python kafka_consume.py --bootstrap HOST:PORT --registry URL --topic FULL_TOPIC --group G --count N
                          [--timeout S] [--offset-reset earliest|latest] [--create-topic P] [--verbose]

  --topic         the full topic (prefix already applied; no EVENT_BUS_TOPIC_PREFIX is set).
  --count         stop after N records were received (successfully handled or not).
  --timeout       give up after S seconds (default 30) -> exit 2 with what was received so far.
  --offset-reset  auto.offset.reset of a group without committed offsets (default earliest, so records
                  produced before this consumer started are read; the library itself leaves
                  librdkafka's default, latest). The consumer config is otherwise the library's, plus
                  topic.metadata.refresh.interval.ms=1000 so a topic created after the consumer
                  subscribed (consumer started first) is picked up (but a group rebalance after that
                  can take ~45 s on librdkafka's mock cluster: prefer --create-topic then).
  --create-topic  make sure the topic exists first, for tests that start the consumer before anything
                  was produced: a producer metadata request for it (auto-creates it where the broker
                  allows, e.g. librdkafka's mock cluster, with the broker's default partition count),
                  else the admin API with P partitions ("already exists" is fine).

This runs edx_event_bus_kafka.KafkaEventConsumer's own loop: poll, determine the signal from the single
ce_type header, deserialize the value with confluent-kafka's AvroDeserializer (writer schema fetched
from the registry by the id in the framing, read with the schema generated from the local event
definition) and openedx-events' AvroSignalDeserializer.from_dict, metadata from the headers with the
library's _get_metadata_from_headers (exactly one ce_id required), send_event_with_custom_metadata to a
receiver connected to every OpenEdxPublicSignal, commit. The receiver turns the typed data back into
datum JSON with openedx-events' AvroSignalSerializer. The key, which the library does not read, is
decoded here with confluent-kafka's AvroDeserializer (writer schema from the registry).

Output (stdout), one JSON line per record:
  {"topic": str, "partition": int, "offset": int, "key": <decoded key: string or integer, null if none>,
   "key_schema_id": int, "value_schema_id": int,
   "headers": {name: value (UTF-8 string; a list of strings when the header repeats)},
   "metadata": {"event_type", "id", "minorversion", "source", "sourcehost", "time", "sourcelib": [int,...]},
   "data": <datum JSON, as in shared/avro-vectors.json>, "from_event_bus": true}
  For a record the library failed on (headers, unknown type, undecodable value; it commits it anyway):
  {"topic", "partition", "offset", "key", "key_schema_id", "value_schema_id", "headers",
   "error": "<exception type: message>"}   ("key_error" appears when the key could not be decoded)
Consumer errors that are not records (e.g. unknown topic before it is created) go to stderr only.
Exit: 0 N records, none failed; 1 N records, some failed; 2 timeout before N; 3 fatal consumer error.
"""
import argparse
import struct
import sys
import threading

import oev_common as common


def headers_json(headers):
    out = {}
    for name, value in headers or []:
        text = value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else value
        if name in out:
            out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [text]
        else:
            out[name] = text
    return out


def schema_id(framed):
    if isinstance(framed, (bytes, bytearray)) and len(framed) >= 5 and framed[0] == 0:
        return struct.unpack(">I", framed[1:5])[0]
    return None


def create_topic(bootstrap, topic, partitions):
    """Make sure the topic exists: a producer's metadata request for it (which auto-creates it where the
    broker allows that, as librdkafka's mock cluster does), else the admin API with P partitions."""
    from confluent_kafka import KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    md = Producer({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    if topic in md.topics and md.topics[topic].error is None:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        fut.result(15)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--offset-reset", choices=["earliest", "latest"], default="earliest")
    p.add_argument("--create-topic", type=int, default=None, metavar="PARTITIONS")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    common.setup_stdio(args.verbose)
    common.configure_django(
        EVENT_BUS_KAFKA_BOOTSTRAP_SERVERS=args.bootstrap,
        EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL=args.registry,
        EVENT_BUS_KAFKA_CONSUMER_POLL_TIMEOUT=0.5,
        EVENT_BUS_KAFKA_CONSUMER_POLL_FAILURE_SLEEP=0.2,
        EVENT_BUS_KAFKA_AUDIT_LOGGING_ENABLED=False,
    )
    from confluent_kafka import Consumer
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from edx_event_bus_kafka import KafkaEventConsumer
    from edx_event_bus_kafka.internal.config import get_schema_registry_client
    from openedx_events.tooling import OpenEdxPublicSignal

    if args.create_topic:
        create_topic(args.bootstrap, args.topic, args.create_topic)
    key_deserializer = AvroDeserializer(get_schema_registry_client())
    state = {"received": 0, "failed": 0, "result": None, "error": None, "timed_out": False}

    class InteropConsumer(KafkaEventConsumer):
        """The library's consumer; only observes what it does, record by record."""

        def _create_consumer(self):
            # the library's own consumer config (see KafkaEventConsumer._create_consumer), plus
            # auto.offset.reset
            from edx_event_bus_kafka.internal.config import load_common_settings
            conf = load_common_settings()
            conf.update({"group.id": self.group_id, "enable.auto.commit": False,
                         "auto.offset.reset": args.offset_reset,
                         # notice a topic created after subscribing within a second (default 5 min)
                         "topic.metadata.refresh.interval.ms": 1000})
            return _CommitObserver(Consumer(conf))

        def record_event_consuming_error(self, run_context, error, maybe_message):
            state["error"] = error
            super().record_event_consuming_error(run_context, error, maybe_message)

    class _CommitObserver:
        """The library commits every polled record exactly once, after handling it: report it there."""

        def __init__(self, consumer):
            self._consumer = consumer

        def commit(self, message=None, **kwargs):
            if message is not None and message.error() is not None:
                # not a record (e.g. "unknown topic or partition" while the topic does not exist yet):
                # nothing to commit; the library would raise here and stop its loop.
                print(f"consumer error (not a record): {message.error()}", file=sys.stderr)
                state["error"] = state["result"] = None
                return None
            report(message)
            return self._consumer.commit(message=message, **kwargs)

        def __getattr__(self, name):
            return getattr(self._consumer, name)

    consumer = InteropConsumer(topic=args.topic, group_id=args.group)

    def report(msg):
        raw_key = msg.key()
        line = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "key": None,
                "key_schema_id": schema_id(raw_key), "value_schema_id": schema_id(state.get("raw_value") or msg.value()),
                "headers": headers_json(msg.headers())}
        if raw_key is not None:
            try:
                line["key"] = key_deserializer(raw_key, SerializationContext(msg.topic(), MessageField.KEY,
                                                                             msg.headers()))
            except Exception as e:  # pylint: disable=broad-except
                line["key_error"] = common.error_text(e)
        if state["result"] is not None and state["error"] is None:
            line.update(state["result"])
        else:
            line["error"] = common.error_text(state["error"]) if state["error"] else \
                "record handled without reaching the receiver"
            state["failed"] += 1
        state["result"] = state["error"] = state["raw_value"] = None
        common.emit_line(line)
        state["received"] += 1
        if state["received"] >= args.count:
            consumer._shut_down()  # pylint: disable=protected-access

    real_deserialize = consumer._deserialize_message_value  # pylint: disable=protected-access

    def deserialize(msg, signal):
        state["raw_value"] = msg.value()  # keep the framed bytes for value_schema_id
        return real_deserialize(msg, signal)

    consumer._deserialize_message_value = deserialize  # pylint: disable=protected-access

    def receiver(sender, signal, metadata, from_event_bus, **event_data):  # pylint: disable=unused-argument
        state["result"] = {
            "metadata": common.metadata_json(metadata),
            "data": common.datum_from_typed(signal, event_data),
            "from_event_bus": from_event_bus,
        }

    for sig in OpenEdxPublicSignal.all_events():
        sig.connect(receiver, weak=False, dispatch_uid="oev-interop-kafka-consume")

    def on_timeout():
        state["timed_out"] = True
        consumer._shut_down()  # pylint: disable=protected-access

    timer = threading.Timer(args.timeout, on_timeout)
    timer.daemon = True
    timer.start()
    if args.count > 0:
        try:
            consumer.consume_indefinitely()
        except Exception as e:  # pylint: disable=broad-except
            print(f"fatal consumer error: {common.error_text(e)}", file=sys.stderr)
            sys.exit(3)
    timer.cancel()
    if state["received"] < args.count:
        print(f"timeout: received {state['received']} of {args.count} records", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if state["failed"] else 0)


if __name__ == "__main__":
    main()
