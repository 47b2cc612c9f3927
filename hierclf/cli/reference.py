"""The CLI reference (docs/cli.md), generated from the argparse parsers themselves so it cannot drift.

Built from the parsers' actions rather than ``format_help()``, whose layout changes between Python versions.
Regenerate with ``python -m hierclf.cli.reference > docs/cli.md``; a test checks the committed file.
"""

from __future__ import annotations

import argparse
import sys

_HEADER = """# CLI reference

Generated from the command-line parsers by `python -m hierclf.cli.reference`; do not edit by hand.

Every command prints errors as one line on standard error and exits non-zero: 1 for invalid input or a
failed check, 2 for a usage error (an unknown option, a missing argument); `evaluate` and `study` with
`--strict` exit 3 when the run raised warnings (the report is written first). Set `HIERCLF_DEBUG=1` to see a
traceback for an internal error (only hierclf's own bugs reach it; a mistake in what a user gives is always a
one-line error). `hierclf -v COMMAND` logs more, `-vv` debug output.

Outputs are written atomically (a temporary file renamed over the target): a symbolic link is written
through, `/dev/stdout`, `/dev/null` and FIFOs are streamed to, and an output that would replace any file the
command reads (also through a link, also a report or figure written into the folder that holds an input) is
refused before it is written. `train` and `study` keep their run folders by their own reuse rules
([training](training.md), [study](study.md)). An output folder that is a file, a full disk or a read-only
folder is one line; the previous file stays as it was.
"""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _describe(action: argparse.Action) -> tuple[str, str]:
    if action.option_strings:
        name = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or (
                action.dest.upper() if not action.choices else "{" + ",".join(map(str, action.choices)) + "}"
            )
            name += f" `{metavar}`" + (" ..." if action.nargs in ("+", "*") else "")
    else:
        name = f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("+", "*") else "")
    help_text = (action.help or "").replace("%(default)s", str(action.default))
    if action.option_strings and action.required:
        help_text += " (required)"
    elif (
        action.option_strings
        and action.default not in (None, False, argparse.SUPPRESS)
        and action.nargs != 0
        and "default" not in help_text
    ):
        help_text += f" (default: {action.default})"
    return name, help_text


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The markdown reference of every subcommand."""
    if parser is None:
        from hierclf.cli import build_parser

        parser = build_parser()
    out = [_HEADER]
    for name, sub in _subparsers(parser).items():
        out.append(f"## `hierclf {name}`\n")
        if sub.description:
            out.append(" ".join(sub.description.split()) + "\n")
        positional = [a for a in sub._actions if not a.option_strings]
        usage = f"hierclf {name} [options]" + "".join(
            f" {a.metavar or a.dest}" + (" ..." if a.nargs in ("+", "*") else "") for a in positional
        )
        out.append(f"```\n{usage}\n```\n")
        rows = [_describe(a) for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            out.append("| argument | meaning |\n| --- | --- |")
            out.extend(f"| {n} | {_cell(h)} |" for n, h in rows)
            out.append("")
        if sub.epilog:
            out.append(" ".join(sub.epilog.split()) + "\n")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
