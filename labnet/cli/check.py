"""`labnet plugins check [NAME...] [--json]`: every installed component against its contract
(:mod:`labnet.testing.contracts` says what is checked and how a component is built for it)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from labnet.testing.contracts import FAIL, PASS, SKIP, CheckResult, format_table, run_checks, summary


def check_command(argv: list[str]) -> int:
    """`labnet plugins check [NAME...] [--json]`: 0 if nothing failed, 1 on a failure, 2 on a usage error."""
    parser = argparse.ArgumentParser(
        prog="labnet plugins check",
        description="Check every installed component (or the NAMEs given) against labnet's contracts: "
        "gradients of layers and losses, optimizer steps and state, data set loading.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="component names to check (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    from labnet.errors import LabnetError
    from labnet.plugins import load_tolerantly

    try:
        _, registry, problems = load_tolerantly()
    except LabnetError as err:
        print(f"labnet plugins check: {err}", file=sys.stderr)
        return 2
    known = {c.name for c in registry.list()}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(
            f"labnet plugins check: unknown component {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(sorted(known))}",
            file=sys.stderr,
        )
        return 2
    results = run_checks(registry, args.names)
    if not args.names:  # a plugin that failed to load cannot be checked: that is a failure too
        for broken in problems:
            error = broken.error.splitlines()[0]
            results.append(CheckResult(broken.plugin, "plugin", str(broken.provider), broken.stage, FAIL, None, error))
    counts = summary(results)
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "summary": counts}, indent=2))
    else:
        print(format_table(results))
        print(f"\n{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped")
    return 1 if counts[FAIL] else 0
