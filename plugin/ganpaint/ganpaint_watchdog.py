"""Cancel a GANPaint job when the plug-in that started it dies.

Started by the plug-in (``python ganpaint_watchdog.py ADDRESS``) in its own session, with a pipe
on stdin. The plug-in writes ``job <id>`` lines as jobs start and ``done`` when it finishes
normally. If stdin closes without ``done`` (GIMP's Cancel button SIGKILLs the plug-in), every
job named is cancelled on the server. Not executable and not named after the folder, so GIMP
never runs it as a plug-in.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: ganpaint_watchdog.py ADDRESS", file=sys.stderr)
        return 2
    address = argv[1]
    jobs: list[str] = []
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", "replace").strip()
        if line == "done":
            return 0
        if line.startswith("job "):
            jobs.append(line[4:].strip())
    if not jobs:
        return 0
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here)]
    sys.path.append(str(here / "vendor"))
    try:
        import ganpaint_client
    except ImportError:
        return 1
    client = ganpaint_client.Client(address, timeout_s=5.0, retries=2)
    try:
        for job in jobs:
            try:
                client.cancel(job)
            except ganpaint_client.ServerError:
                pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
