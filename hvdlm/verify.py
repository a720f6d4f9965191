"""Check a preprocessed dataset in full: manifest, sha256 of every shard, schema, offsets, ids.

    python -m hvdlm.verify DIR

Exit 0 with a one-line summary, or exit 1 with one line naming the first bad file and what is
wrong with it (hvdlm/text/shards.py).
"""
from __future__ import annotations

import sys
from typing import Sequence

from hvdlm import cli
from hvdlm.text.shards import verify_dataset

PROG = "hvdlm.verify"


def _main(argv: Sequence[str] | None) -> int:
    p = cli.ArgumentParser(prog=PROG, description="Check a preprocessed hvdlm dataset.")
    p.add_argument("dir", metavar="DIR")
    a = p.parse_args(argv)
    t = verify_dataset(a.dir)
    print(f"{a.dir}: ok ({t['shards']} shards, {t['docs']} documents, {t['tokens']} tokens)")
    return 0


main = cli.entry_point(_main, PROG)

if __name__ == "__main__":
    sys.exit(main())
