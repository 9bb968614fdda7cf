"""A consumer-group member in a process of its own, for the group tests.

``python member.py BOOTSTRAP TOPIC GROUP [--commit]`` prints ``assigned P,Q,...``
each time its assignment changes and, with ``--commit``, ``committed`` after each
offset commit the broker accepted (``refused NAME`` otherwise). A test kills it with
SIGKILL to play an executor that dies without leaving the group.
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError


async def main(bootstrap: str, topic: str, group: str, commit: bool) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=300,
        session_timeout_ms=6000,
    )
    await consumer.start()
    shown: set[int] | None = None
    try:
        while True:
            # short polls: with --commit, commits come often enough that one meets a rebalance
            await consumer.getmany(timeout_ms=20, max_records=5)
            owned = {tp.partition for tp in consumer.assignment()}
            if owned != shown:
                shown = owned
                print("assigned " + ",".join(str(p) for p in sorted(owned)), flush=True)
            if commit and owned:
                try:
                    await consumer.commit()
                except KafkaError as exc:
                    print(f"refused {type(exc).__name__}", flush=True)
                else:
                    print("committed", flush=True)
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], "--commit" in sys.argv[4:]))
