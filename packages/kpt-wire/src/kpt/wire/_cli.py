"""`kpt-wire keygen DIR`: make CURVE key pairs for a server and its clients."""

from __future__ import annotations

import argparse
import sys

from kpt.wire._security import generate_keys
from kpt.wire._version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kpt-wire", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write CURVE key pairs (NAME.key, NAME.key_secret)")
    keygen.add_argument("directory", help="folder to write the keys into (created if missing)")
    keygen.add_argument(
        "--name",
        action="append",
        help="key pair name; repeat for several (default: server and client)",
    )
    args = parser.parse_args(argv)
    for name in args.name or ["server", "client"]:
        public, _ = generate_keys(args.directory, name)
        print(f"{args.directory}/{name}.key_secret  public key: {public.decode()}")
    print(
        "Server: its .key_secret, plus a folder holding the clients' .key files "
        "(authorized_keys=FOLDER). "
        "give each client its own .key_secret and the server's public key.",
        file=sys.stderr,
    )
    return 0
