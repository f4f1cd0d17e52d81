"""Run librdkafka's built-in mock Kafka cluster (through confluent-kafka) for tests without a broker.

confluent-kafka has no public mock-cluster API, but librdkafka starts one inside any client created
with the "test.mock.num.brokers" property and logs its bootstrap address; other clients (in other
processes too, e.g. Rust's rdkafka or the scripts here) can then connect to that address for as long
as this process lives. The mock cluster supports produce, fetch, metadata and consumer groups, and
auto-creates topics.

Usage: python mock_kafka.py [--brokers 1] [--topic T ...] [--stdin-lifetime]
  Prints "bootstrap=127.0.0.1:PORT" on stdout once the cluster is up, then keeps it up until
  SIGTERM/SIGINT, or until stdin reaches EOF with --stdin-lifetime.
  --topic T (repeatable) creates T up front, by a metadata request that auto-creates it (the mock's
  CreateTopics fails: its metadata names no controller). Auto-created topics get the mock's default
  partition count (4 seen with librdkafka 2.16); this cannot be chosen from Python.
"""
import argparse
import logging
import signal
import sys
import threading
import time

from confluent_kafka import Producer


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", type=int, default=1)
    p.add_argument("--topic", action="append", default=[], help="pre-create this topic (repeatable)")
    p.add_argument("--stdin-lifetime", action="store_true")
    args = p.parse_args()

    found = threading.Event()
    address = {}

    class Grab(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            marker = "bootstrap.servers="
            if "Mock cluster" in msg and marker in msg and not found.is_set():
                address["bootstrap"] = msg.split(marker, 1)[1].split()[0]
                found.set()

    log = logging.getLogger("mock-kafka")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(Grab())
    holder = Producer({
        "bootstrap.servers": "unused:9092",
        "test.mock.num.brokers": args.brokers,
        "logger": log,
        "debug": "mock",
    })
    deadline = time.time() + 10
    while not found.is_set() and time.time() < deadline:
        holder.poll(0.1)
    if not found.is_set():
        sys.exit("mock cluster address not found in librdkafka's log")
    bootstrap = address["bootstrap"]

    for topic in args.topic:
        md = holder.list_topics(topic=topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            sys.exit(f"could not create topic {topic}")

    print(f"bootstrap={bootstrap}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.stdin_lifetime:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        holder.poll(0.2)


if __name__ == "__main__":
    main()
