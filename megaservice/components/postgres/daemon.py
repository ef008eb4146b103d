"""`python -m megaservice.components.postgres.daemon`: an owner of a data directory's PostgreSQL, without HTTP.

    python -m megaservice.components.postgres.daemon --data-dir DIR                 until SIGTERM/SIGINT
    python -m megaservice.components.postgres.daemon --data-dir DIR --idle-stop 30 --detach
                                    what a service starts when no server runs (embedded.py): in the
                                    background, stopping 30 s after the last service using it left

See owner.py for what an owner does.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from megaservice.components.postgres.cluster import Cluster
from megaservice.components.postgres.owner import Owner

__all__ = ["main"]

logger = logging.getLogger("megaservice.postgres")


def _detach() -> None:
    """Go on in a grandchild of the caller's process, in a session of its own (the caller does not wait for it)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server of a data directory until SIGTERM/SIGINT (or, with `--idle-stop`, until unused)."""
    parser = argparse.ArgumentParser(prog="python -m megaservice.components.postgres.daemon", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the megaservice data directory")
    parser.add_argument("--idle-stop", type=float, help="stop this many seconds after the last service left")
    parser.add_argument("--detach", action="store_true", help="run in the background (fork, new session)")
    args = parser.parse_args(argv)
    if args.detach:
        _detach()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    owner = Owner(Cluster.of(args.data_dir), idle_stop=args.idle_stop)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        await owner.run(stop)

    try:
        asyncio.run(run())
    except Exception:
        logger.exception("the PostgreSQL owner failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
