"""`labnet plugins`: every component with its provider, and every broken plugin with its error.

`labnet plugins check [NAME...]` checks the components against their contracts (:mod:`labnet.check`).
"""

from __future__ import annotations

import argparse
import json
import sys

from labnet.errors import LabnetError
from labnet.plugins import Registry, get_plugin_manager


def plugins_command(argv: list[str]) -> int:
    if argv and argv[0] == "check":
        from labnet.check import check_command

        return check_command(argv[1:])
    parser = argparse.ArgumentParser(
        prog="labnet plugins",
        description="List installed labnet components.",
        epilog="`labnet plugins check [NAME...] [--json]` checks them (gradients, optimizer state, data loading).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    manager = get_plugin_manager()
    try:
        registry = Registry(manager)
    except LabnetError as err:
        print(f"labnet plugins: {err}", file=sys.stderr)
        return 2
    rows = [
        {
            "kind": c.kind,
            "name": c.name,
            "plugin": c.provider.plugin,
            "distribution": c.provider.dist,
            "version": c.provider.version,
        }
        for c in registry.list()
    ]
    broken = [
        {"plugin": b.plugin, "distribution": b.provider.dist, "version": b.provider.version, "error": b.error}
        for b in manager.broken
    ]
    if args.json:
        print(json.dumps({"components": rows, "broken": broken}, indent=2))
        return 0
    headers = ("kind", "name", "distribution", "version", "plugin")
    table = [headers] + [tuple(r[h] for h in headers) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(headers))]
    for i, row in enumerate(table):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for b in broken:
        print(f"BROKEN  {b['plugin']}  {b['distribution']} {b['version']}: {b['error']}")
    return 0
