"""Run the fake back office (tests/fakes/sink.py) in its own process for tests/bench/ingest.py.

Prints its base URL on the first line, then answers each `stats` line on stdin with one JSON line
({"records", "creates", "duplicate_creates"}); stops when stdin closes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes.sink import Sink


def main() -> None:
    sink = Sink(keep_requests=False).start()
    print(sink.url, flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "stats":
                creates = sink.creates
                print(json.dumps({"records": len(creates), "creates": sum(creates.values()),
                                  "duplicate_creates": sum(n - 1 for n in creates.values() if n > 1)}),
                      flush=True)
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
