"""Sends a unit's track as NMEA 0183, built by pynmeagps (a third-party
NMEA generator and parser), to bluelight's --nmea-tcp and --nmea-udp.

Usage: nmea_send.py tcp|udp HOST:PORT UNIT_ID SECONDS LAT LON

Sends $PBLU,ID,UNIT_ID, then one RMC and one GGA a second for SECONDS
seconds of device time ending now (a receiver's output, sent at once),
moving north 10 m a second. Prints the last position sent as JSON.
"""

import datetime
import json
import socket
import sys

from pynmeagps import GET, NMEAMessage
from pynmeagps.nmeahelpers import calc_checksum


def pblu(unit: str) -> bytes:
    content = f"PBLU,ID,{unit}"
    return f"${content}*{calc_checksum(content)}\r\n".encode()


def main() -> None:
    mode, addr, unit, seconds, lat0, lon = sys.argv[1:7]
    host, port = addr.rsplit(":", 1)
    seconds, lat0, lon = int(seconds), float(lat0), float(lon)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    sentences = []
    lat = lat0
    for k in range(seconds):
        t = now - datetime.timedelta(seconds=seconds - 1 - k)
        lat = lat0 + k * 10 / 111_195
        ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
        rmc = NMEAMessage("GN", "RMC", GET, time=t.time(), status="A", lat=lat, NS=ns,
                          lon=lon, EW=ew, spd=19.4, cog=0.0, date=t.date(), posMode="A")
        gga = NMEAMessage("GP", "GGA", GET, time=t.time(), lat=lat, NS=ns, lon=lon, EW=ew,
                          quality=1, numSV=10, HDOP=0.8, alt=35.0, altUnit="M", sep=47.0,
                          sepUnit="M")
        sentences.append(rmc.serialize() + gga.serialize())
    if mode == "tcp":
        with socket.create_connection((host, int(port))) as s:
            s.sendall(pblu(unit) + b"".join(sentences))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for pair in sentences:
                s.sendto(pblu(unit) + pair, (host, int(port)))
    print(json.dumps({"lat": lat, "lon": lon, "fixes": seconds}))


if __name__ == "__main__":
    main()
