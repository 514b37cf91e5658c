"""``labnet sync [FOLDER ...] [--wait]``: bring MLflow up to date with run folders.

Without folders: every run of this working folder that MLflow does not fully hold yet (a store
that was down, a process that was killed, a background sync that has not finished). A folder may be
a run's, a sweep's (its jobs), or any folder above them. Syncing twice changes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from labnet.record.journal import JOURNAL_FILE, owner_alive


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labnet sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="run or sweep folders (default: this folder's runs)")
    parser.add_argument("--wait", action="store_true", help="wait for runs still going on to end, then sync them")
    parser.add_argument("--tracking-uri", help="the store of runs that name none (default: MLflow's default here)")
    parser.add_argument("--timeout", type=float, default=600.0, help="the longest --wait waits (seconds)")
    return parser


def run_folders(folders: list[Path]) -> list[Path]:
    """Every run folder (one holding a journal) at or below ``folders``."""
    found: list[Path] = []
    for folder in folders:
        if (folder / JOURNAL_FILE).is_file():
            found.append(folder)
        elif folder.is_dir():
            found += sorted(p.parent for p in folder.rglob(JOURNAL_FILE))
    return found


def sync_command(argv: list[str]) -> int:
    from labnet.errors import LabnetError
    from labnet.tracking.mirror import Mirror, record_sync_error
    from labnet.tracking.syncer import pending

    args = build_parser().parse_args(argv)
    workdir = Path.cwd()
    markers = {}
    if args.folders:
        missing = [str(f) for f in args.folders if not f.exists()]
        if missing:
            print(f"labnet: error: no such folder: {', '.join(missing)}", file=sys.stderr)
            return 2
        folders = run_folders(args.folders)
        if not folders:
            where = ", ".join(map(str, args.folders))
            print(f"labnet: error: no labnet run ({JOURNAL_FILE}) in {where}", file=sys.stderr)
            return 2
    else:
        listed = pending(workdir)
        markers = {folder.resolve(): marker for marker, folder, _ in listed}
        folders = [folder for _, folder, _ in listed if folder.is_dir()]
    if args.wait:
        deadline = time.monotonic() + args.timeout
        while any(owner_alive(f) for f in folders) and time.monotonic() < deadline:
            time.sleep(0.2)
    mirror, counts, failed = Mirror(), {}, 0
    for folder in folders:
        try:
            outcome = mirror.sync(folder, args.tracking_uri)
        except (LabnetError, Exception) as err:  # noqa: B014  (a store error of any kind: say which run, go on)
            failed += 1
            record_sync_error(folder, err)
            print(f"labnet: {folder}: not synced: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        marker = markers.get(folder.resolve())
        if marker is not None and outcome.complete:
            marker.unlink(missing_ok=True)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to sync"
    print(f"labnet: synced {sum(counts.values())} run(s): {summary}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0
