"""Consume Open edX events from a Redis stream with edx-event-bus-redis's own consumer.

Usage:
  python redis_consume.py --url redis://127.0.0.1:6379/ --stream FULL_TOPIC --group G --count N
                          [--timeout S] [--consumer NAME] [--last-id ID | --new-only] [--verbose]

  --stream    the full stream name (prefix already applied; no EVENT_BUS_TOPIC_PREFIX is set).
  --group     consumer group; created if missing. A new group starts at the beginning of the stream.
  --count     stop after N messages were received (successfully handled or not).
  --timeout   give up after S seconds (default 30) -> exit 2 with what was received so far.
  --consumer  consumer name inside the group (default "py-interop").
  --last-id   replay after this stream id (the library's last_read_msg_id: sets the group's id).
  --new-only  the library's default start: move the group to "$" (only messages added later).
  Without --last-id/--new-only the library runs with check_backlog=True (the group's backlog is read).

This runs edx_event_bus_redis.RedisEventConsumer's own loop: XREADGROUP via walrus, RedisMessage.parse
(metadata from the stream fields with the library's get_metadata_from_headers), openedx-events'
deserialize_bytes_to_event_data with the schema generated from the local event definition, then
signal.send_event_with_custom_metadata(...) to a receiver connected to every OpenEdxPublicSignal, and
XACK. The receiver turns the typed data back into datum JSON with openedx-events' AvroSignalSerializer.

Output (stdout), one JSON line per received message, in stream order:
  {"stream_id": "<ms-seq>", "metadata": {"event_type", "id", "minorversion", "source", "sourcehost",
   "time", "sourcelib": [int,...]}, "data": <datum JSON, as in shared/avro-vectors.json>,
   "from_event_bus": true}
  For a message the library failed on (bad fields, unknown type, undecodable data; it acks it anyway):
  {"stream_id": "<ms-seq>", "error": "<exception type: message>"}
Exit: 0 N messages, none failed; 1 N messages, some failed; 2 timeout before N; 3 fatal consumer error.
"""
import argparse
import sys
import threading

import oev_common as common


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--consumer", default="py-interop")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--last-id", default=None)
    start.add_argument("--new-only", action="store_true")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    common.setup_stdio(args.verbose)
    common.configure_django(
        EVENT_BUS_REDIS_CONNECTION_URL=args.url,
        EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT=1,  # seconds of XREADGROUP BLOCK; lets --timeout work
        EVENT_BUS_REDIS_CONSUMER_POLL_FAILURE_SLEEP=0.2,
        EVENT_BUS_REDIS_AUDIT_LOGGING_ENABLED=False,
    )
    from edx_event_bus_redis import RedisEventConsumer
    from openedx_events.tooling import OpenEdxPublicSignal

    state = {"received": 0, "failed": 0, "result": None, "error": None, "timed_out": False}

    class InteropConsumer(RedisEventConsumer):
        """The library's consumer; only observes what it does, message by message."""

        def record_event_consuming_error(self, run_context, error, maybe_message):
            state["error"] = error
            super().record_event_consuming_error(run_context, error, maybe_message)

    consumer = InteropConsumer(
        topic=args.stream, group_id=args.group, consumer_name=args.consumer,
        last_read_msg_id=args.last_id, check_backlog=not args.new_only,
    )

    def receiver(sender, signal, metadata, from_event_bus, **event_data):  # pylint: disable=unused-argument
        state["result"] = {
            "metadata": common.metadata_json(metadata),
            "data": common.datum_from_typed(signal, event_data),
            "from_event_bus": from_event_bus,
        }

    for sig in OpenEdxPublicSignal.all_events():
        sig.connect(receiver, weak=False, dispatch_uid="oev-interop-redis-consume")

    group_stream = consumer.consumer
    real_ack = group_stream.ack

    def ack(*ids):
        # The library acks every received message exactly once, after handling it: report it here.
        stream_id = ids[0].decode() if isinstance(ids[0], bytes) else str(ids[0])
        if state["result"] is not None and state["error"] is None:
            line = {"stream_id": stream_id, **state["result"]}
        else:
            line = {"stream_id": stream_id, "error": common.error_text(state["error"]) if state["error"]
                    else "message handled without reaching the receiver"}
            state["failed"] += 1
        state["result"] = state["error"] = None
        common.emit_line(line)
        state["received"] += 1
        if state["received"] >= args.count:
            consumer._shut_down()  # pylint: disable=protected-access
        return real_ack(*ids)

    group_stream.ack = ack

    def on_timeout():
        state["timed_out"] = True
        consumer._shut_down()  # pylint: disable=protected-access

    timer = threading.Timer(args.timeout, on_timeout)
    timer.daemon = True
    timer.start()
    if args.count > 0:
        try:
            consumer.consume_indefinitely()
        except Exception as e:  # fatal (connection) errors are re-raised by the library's loop
            print(f"fatal consumer error: {common.error_text(e)}", file=sys.stderr)
            sys.exit(3)
    timer.cancel()
    if state["received"] < args.count:
        print(f"timeout: received {state['received']} of {args.count} messages", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if state["failed"] else 0)


if __name__ == "__main__":
    main()
