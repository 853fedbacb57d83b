"""``python -m exchange.journal.check TARGET OPTIONS_JSON TO_SEQ``: verify the hash chain of
records 1..TO_SEQ read-only and print one JSON line (``{"records": n}``, or
``{"corrupt_seq": s, "reason": ...}``, or ``{"error": ...}``). CoreRunner runs it in a child
process so the check of a long log uses the other core while recovery replays the tail."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from . import open_journal
from .base import JournalCorruptError


async def check(target: str, options: dict[str, Any], to_seq: int) -> dict[str, Any]:
    j = open_journal(target, **dict(options, repair_tail=False, readonly=True))
    try:
        await j.open()
        rep = await j.verify_chain(1, to_seq)
        return {"records": rep.records, "last_hash": rep.last_hash}
    except JournalCorruptError as e:
        return {"corrupt_seq": e.seq, "reason": e.reason}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        await j.close()


def main(argv: list[str]) -> int:
    target, options, to_seq = argv[0], json.loads(argv[1]), int(argv[2])
    print(json.dumps(asyncio.run(check(target, options, to_seq))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
