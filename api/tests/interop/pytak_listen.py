"""Connects to bluelight's --cot-tcp as a TAK client with pytak (a
third-party TAK client library) and listens to the live picture (CoT out).

Usage: pytak_listen.py HOST:PORT SECONDS

Prints, as JSON, each unit seen: its latest event's callsign, type, time
and stale (ms since the epoch), when that event arrived (ms, this
machine's clock), and how many events came for it.
"""

import asyncio
import configparser
import datetime
import json
import sys
import time
import xml.etree.ElementTree as ET

import pytak


class Collect(pytak.RXWorker):
    """Queues each event pytak reads off the socket."""

    async def handle_data(self, data: bytes) -> None:
        pass


def ms(t: str) -> int:
    return int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000)


async def main() -> None:
    addr, seconds = sys.argv[1], float(sys.argv[2])
    config = configparser.ConfigParser()
    config["bluelight"] = {"COT_URL": f"tcp://{addr}"}
    section = config["bluelight"]
    reader, _writer = await pytak.protocol_factory(section)
    queue: asyncio.Queue = asyncio.Queue()
    rx = Collect(queue, section, reader)
    task = asyncio.create_task(rx.run())
    seen = {}
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(queue.get(), timeout=left)
        except asyncio.TimeoutError:
            break
        event = ET.fromstring(data.strip())
        contact = event.find("detail/contact")
        uid = event.get("uid")
        seen[uid] = {
            "callsign": contact.get("callsign") if contact is not None else None,
            "type": event.get("type"),
            "time_ms": ms(event.get("time")),
            "stale_ms": ms(event.get("stale")),
            "received_ms": int(time.time() * 1000),
            "events": seen.get(uid, {}).get("events", 0) + 1,
        }
    task.cancel()
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main())
