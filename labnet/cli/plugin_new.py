"""`labnet plugin new NAME`: a ready plugin package (a layer, an optimizer, a data set, an epoch hook, tests
that pass, a README) written from the files in ``labnet/plugin_template``.

The package is ``labnet-NAME`` (import name ``labnet_NAME``, entry point ``NAME``); its components are
called ``NAME_leaky_relu``, ``NAME_lion`` and ``NAME_blobs`` so that two generated plugins never clash.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

from labnet import __version__
from labnet.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parents[1] / "plugin_template"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def check_name(name: str) -> str:
    """``name`` when it can be a plugin name, an entry point and part of a Python package name."""
    if not NAME_RE.match(name) or keyword.iskeyword(name) or name.endswith("_"):
        raise ConfigError(
            f"plugin name {name!r}: use lower-case letters, digits and underscores, starting with a letter "
            "(at most 40 characters), e.g. 'demo' or 'my_layers'"
        )
    return name


def new_plugin(name: str, parent: Path) -> Path:
    """Write the package ``labnet-NAME`` into ``parent``; returns its folder. An existing folder is refused."""
    check_name(name)
    dist, package = f"labnet-{name.replace('_', '-')}", f"labnet_{name}"
    folder = Path(parent) / dist
    if folder.exists():
        raise ConfigError(f"{folder} exists already: remove it or choose another NAME or --dir")
    values = {"name": name, "dist": dist, "package": package, "labnet_version": __version__}
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = source.relative_to(TEMPLATE).with_suffix("")  # drop .tmpl
        target = folder / Path(*(package if part == "package" else part for part in relative.parts))
        text = source.read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder


def plugin_command(argv: list[str]) -> int:
    """`labnet plugin new NAME [--dir DIR]`: 0 when written, 2 for a bad name or an existing folder."""
    parser = argparse.ArgumentParser(prog="labnet plugin", description="Write a new labnet plugin package.")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser(
        "new",
        help="a package with a layer, an optimizer, a data set, an epoch hook, tests and a README",
        description="Write labnet-NAME/: a layer, an optimizer, a data set and an epoch hook, with tests that "
        "pass and a README. Install it with `pip install -e labnet-NAME`.",
    )
    new.add_argument("name", metavar="NAME", help="the plugin's name, e.g. demo (the package is labnet-demo)")
    new.add_argument("--dir", type=Path, default=Path.cwd(), help="where to create labnet-NAME/ (default: here)")
    args = parser.parse_args(argv)
    try:
        folder = new_plugin(args.name, args.dir)
    except ConfigError as err:
        print(f"labnet plugin new: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {folder}/ (labnet-{args.name.replace('_', '-')}); next:")
    print(f"  pip install -e '{folder}[test]' && pytest {folder}")
    print(f"  labnet plugins check {args.name}_leaky_relu {args.name}_lion {args.name}_blobs")
    return 0
