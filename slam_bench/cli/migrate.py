"""`slam-bench migrate FILE [--yes]`: sign a runs file written before rows were signed.

Such a file has no `row_digest` column, so nothing can tell its rows from rows edited by hand;
every other command refuses it. This command reads it as strictly as any runs file (types,
accuracies in [0, 1], unique ids, registered methods), with targets 'soft' and variant 'full'
where the file lacks those columns (the versions that wrote such files had no hard labels and
no smoke rows), prints every row it would sign with its accuracy, and writes the signed file
only with --yes. Sign only a file you trust: signing vouches for its rows as they are now.
A signed file is never migrated again.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from slam_bench.cli.common import fail, io_fail, user_errors

PROG = "slam-bench migrate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a runs file without a row_digest column, "
                                                "e.g. results/runs/digits.csv")
    parser.add_argument("--yes", action="store_true",
                        help="sign the rows shown and write the file (without it: a dry run "
                             "that shows the rows and writes nothing)")


def main(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return fail(PROG, f"{path}: no such file")
    try:
        from slam_bench.pipeline.methods import METHODS
        from slam_bench.store import DIGEST, migrate_legacy, read_legacy
        rows = read_legacy(path, known_methods=METHODS)
        header = path.read_text(encoding="utf-8-sig").partition("\n")[0].split(",")
        added = [c for c in ("targets", "variant") if c not in header]
        print(f"{path}: {len(rows)} rows without a {DIGEST}" +
              (f"; the columns {', '.join(added)} will be added (soft, full)" if added else ""))
        for r in rows:
            i = r.id
            print(f"  line {r.line}: {i.variant} {i.dataset} labeled={i.labeled_size} "
                  f"split={i.split_seed} train={i.train_seed} {i.method}/{i.targets}: "
                  f"test_acc={r.cells['test_acc']} config_hash={r.cells['config_hash']}")
        if not args.yes:
            print(f"dry run: nothing written; `{PROG} {path} --yes` signs these {len(rows)} "
                  f"rows as they are")
            return 0
        migrate_legacy(path, rows)
    except user_errors() as e:
        return fail(PROG, e)
    except OSError as e:
        return io_fail(PROG, e, f"{path} is unchanged")
    print(f"signed {len(rows)} rows in {path}")
    return 0
