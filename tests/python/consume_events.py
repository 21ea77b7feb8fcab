#!/usr/bin/env python3
"""An analytics-style consumer outside Rust: reads the LIS event topics from
the beginning with confluent-kafka (librdkafka), validates every event
against its JSON Schema under schemas/ with the standard `jsonschema`
validator (draft 2020-12, formats checked), and checks the CloudEvents 1.0
binary-mode headers.

    python3 tests/python/consume_events.py --brokers 127.0.0.1:9092 [--prefix P]

Prints one JSON line: {"events": N, "types": {...}, "errors": [...]} and
exits non-zero when any event fails. The partner guide's analytics page
shows the same loop.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS = Path(__file__).resolve().parent.parent.parent / "schemas"
TOPICS = ["lis.patients.v1", "lis.orders.v1", "lis.reference.v1"]


def validator_for(cache: dict, event: dict):
    name = (event.get("streamType"), event.get("type"), event.get("schemaVersion"))
    if name not in cache:
        path = SCHEMAS / f"{name[0]}/{name[1]}.v{name[2]}.json"
        schema = json.loads(path.read_text()) if path.is_file() else None
        cache[name] = (
            Draft202012Validator(schema, format_checker=FormatChecker()) if schema else None
        )
    return cache[name]


def header_errors(event: dict, headers: dict) -> list[str]:
    want = {
        "ce_specversion": "1.0",
        "ce_id": event["eventID"],
        "ce_type": f"lis.{event['type']}.v{event['schemaVersion']}",
        "ce_source": f"/lis/{event['streamType']}",
        "ce_time": event["occurredAt"],
        "ce_subject": event["streamID"],
        "content-type": "application/json",
    }
    return [f"header {k} is {headers.get(k)!r}, expected {v!r}" for k, v in want.items() if headers.get(k) != v]


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--brokers", required=True)
    args.add_argument("--prefix", default="")
    args.add_argument("--timeout", type=float, default=60.0)
    opts = args.parse_args()

    consumer = Consumer({
        "bootstrap.servers": opts.brokers,
        "group.id": "lis-python-check",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    assignment, remaining = [], 0
    for topic in (opts.prefix + t for t in TOPICS):
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            remaining += high - low
            assignment.append(TopicPartition(topic, p, low))
    consumer.assign(assignment)

    seen, types, errors, cache = set(), {}, [], {}
    read = 0
    while read < remaining:
        msg = consumer.poll(opts.timeout)
        if msg is None:
            errors.append(f"timed out after {read} of {remaining} records")
            break
        if msg.error():
            errors.append(str(msg.error()))
            break
        read += 1
        event = json.loads(msg.value())
        if event["eventID"] in seen:  # a repeat after a broker failure
            continue
        seen.add(event["eventID"])
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()} {event.get('type')}"
        v = validator_for(cache, event)
        if v is None:
            errors.append(f"{where}: no schema")
        else:
            errors.extend(f"{where}: {e.json_path}: {e.message}" for e in v.iter_errors(event))
        headers = {k: (val.decode() if val is not None else None) for k, val in (msg.headers() or [])}
        errors.extend(f"{where}: {e}" for e in header_errors(event, headers))
        if msg.key() is None or msg.key().decode() != event["streamID"]:
            errors.append(f"{where}: key is not the streamID")
        types[event["type"]] = types.get(event["type"], 0) + 1
    consumer.close()
    print(json.dumps({"events": len(seen), "types": types, "errors": errors}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
