"""A real SMTP server for the tests: aiosmtpd's SMTP protocol with its Maildir handler.

Binds 127.0.0.1 itself and prints the port it got on the first line of stdout, so tests never
reserve a port and bind it later (a race between parallel tests). With a port argument it binds
that port with SO_REUSEPORT: the test holds the port with a bound, non-listening socket of its own
(connections are refused while no server listens) and starts and stops servers on it.

usage: smtp_server.py MAILDIR [PORT]
"""
import asyncio
import socket
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


def main():
    maildir = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    handler = Mailbox(maildir)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # An explicit hostname: the default (socket.getfqdn) asks DNS on every connection, which
    # stalls for seconds where no resolver answers.
    loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, hostname="localhost"), sock=sock)
    )
    print(sock.getsockname()[1], flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
