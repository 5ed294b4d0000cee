"""A kpt.wire server in its own process, for tests that kill and restart it.

Usage: python wire_server_process.py ENDPOINT HEARTBEAT [MAX_MESSAGE_BYTES]
(with MAX_MESSAGE_BYTES, also small frame and header limits: 16 frames, 4 KiB headers)
Prints "ready ENDPOINT" once bound; serves until killed or sent "stop" through stdin.
"""

import sys
import time

from kpt.wire import HandlerError, Limits, Server


def main() -> None:
    endpoint, interval = sys.argv[1], float(sys.argv[2])
    limits = Limits()
    if len(sys.argv) > 3:
        limits = Limits(max_frames=16, max_header_bytes=4096, max_message_bytes=int(sys.argv[3]))
    server = Server(endpoint, limits=limits, heartbeat_interval=interval)
    server.register("echo", lambda msg, client: (msg.header, msg.arrays))
    server.register("sleep", lambda msg, client: time.sleep(msg.header["seconds"]) or {})

    def fail(msg, client):
        raise HandlerError("refused", "asked to fail", value=msg.header.get("value"))

    server.register("fail", fail)
    with server:
        print("ready", server.endpoint, flush=True)
        sys.stdin.readline()  # EOF or a line: stop


if __name__ == "__main__":
    main()
