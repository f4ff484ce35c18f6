"""``python -m rag.api [--data-dir D] [--host H] [--port P] [--insecure]``: the REST API without the CLI.

The same as ``rag serve``; handy for process managers and tests. Prints ``serving at URL`` on stderr once
the socket listens.
"""

from __future__ import annotations

import argparse
import sys

from rag.api.server import serve
from rag.core.errors import RagError
from rag.core.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.api", description=__doc__)
    parser.add_argument("--data-dir")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--insecure", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
        serve(settings, host=args.host, port=args.port, insecure=args.insecure,
              on_ready=lambda url: print(f"serving at {url}", file=sys.stderr, flush=True))
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
