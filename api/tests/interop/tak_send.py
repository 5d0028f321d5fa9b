"""Sends a unit's track as TAK protocol version 1, encoded by takproto (a
third-party TAK protocol library), to bluelight's --cot-tcp (streaming
framing) or --cot-udp (mesh framing).

Usage: tak_send.py tcp|udp HOST:PORT UID SECONDS LAT LON

One CoT position report a second of device time ending now, moving north
10 m a second, with a callsign, a team and a track. Prints the last
position sent as JSON.
"""

import datetime
import json
import socket
import sys

import takproto


def event(uid: str, t: datetime.datetime, lat: float, lon: float) -> str:
    ts = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    stale = (t + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="{ts}" '
        f'start="{ts}" stale="{stale}"><point lat="{lat:.7f}" lon="{lon:.7f}" hae="35.0" '
        f'ce="4.5" le="9999999.0"/><detail><contact callsign="{uid}-CS" endpoint="*:-1:stcp"/>'
        f'<__group name="Cyan" role="Team Member"/><track course="0.0" speed="10.0"/>'
        f"</detail></event>"
    )


def main() -> None:
    mode, addr, uid, seconds, lat0, lon = sys.argv[1:7]
    host, port = addr.rsplit(":", 1)
    seconds, lat0, lon = int(seconds), float(lat0), float(lon)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    messages = []
    lat = lat0
    for k in range(seconds):
        t = now - datetime.timedelta(seconds=seconds - 1 - k)
        lat = lat0 + k * 10 / 111_195
        ver = takproto.TAKProtoVer.STREAM if mode == "tcp" else takproto.TAKProtoVer.MESH
        messages.append(bytes(takproto.xml2proto(event(uid, t, lat, lon), ver)))
    if mode == "tcp":
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"".join(messages))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for m in messages:
                s.sendto(m, (host, int(port)))
    print(json.dumps({"lat": round(lat, 7), "lon": lon, "events": seconds}))


if __name__ == "__main__":
    main()
