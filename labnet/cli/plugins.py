"""`labnet plugins`: every component with its provider, every plugin with the hooks it implements, and every
plugin problem as one line (a plugin that fails to import, a hook that does not fit its spec, a name clash),
with everything else still listed.

`labnet plugins check [NAME...]` checks the components against their contracts (:mod:`labnet.cli.check`).
"""

from __future__ import annotations

import argparse
import json
import sys

from labnet.errors import LabnetError
from labnet.plugins import BrokenPlugin, LabnetPluginManager, Registry, load_tolerantly
from labnet.tables import text_table


def load_for_diagnosis(command: str) -> tuple[LabnetPluginManager, Registry, list[BrokenPlugin]] | None:
    """The manager and registry of everything that loads, and the problems of what does not (one line each);
    None (after printing the error) when not even the built-ins load."""
    try:
        return load_tolerantly()
    except LabnetError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return None


def plugins_command(argv: list[str]) -> int:
    if argv and argv[0] == "check":
        from labnet.cli.check import check_command

        return check_command(argv[1:])
    parser = argparse.ArgumentParser(
        prog="labnet plugins",
        description="List installed labnet components, the plugins with their hooks, and plugin problems.",
        epilog="`labnet plugins check [NAME...] [--json]` checks them (gradients, optimizer state, data loading).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    loaded = load_for_diagnosis("labnet plugins")
    if loaded is None:
        return 2
    manager, registry, problems = loaded
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
    plugins = [
        {"plugin": name, "distribution": p.dist, "version": p.version, "hooks": manager.hooks(name)}
        for name, p in manager.providers.items()
    ]
    broken = [
        {
            "plugin": b.plugin,
            "distribution": b.provider.dist,
            "version": b.provider.version,
            "stage": b.stage,
            "error": b.error,
        }
        for b in problems
    ]
    if args.json:
        print(json.dumps({"components": rows, "plugins": plugins, "broken": broken}, indent=2))
        return 0
    headers = ("kind", "name", "distribution", "version", "plugin")
    print(text_table(headers, [tuple(r[h] for h in headers) for r in rows]))
    print()
    plugin_rows = [(p["plugin"], p["distribution"], p["version"], ", ".join(p["hooks"])) for p in plugins]
    print(text_table(("plugin", "distribution", "version", "hooks"), plugin_rows))
    for b in problems:
        print(f"BROKEN  {b.plugin}  {b.provider.dist} {b.provider.version}: {b.error.splitlines()[0]}")
    return 0
