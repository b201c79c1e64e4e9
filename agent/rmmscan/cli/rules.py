"""`rmmscan rules list|validate|test|export`: the rule pack from the command line.

Each sub-command reads the bundled pack, or the files and folders given with ``--rules``
(repeatable; they replace the bundled pack). Exit status: 0 good; 1 ``test`` found rows that
fail; 2 the pack (or an allowlist, a test file, the output folder) has a problem, each named
on stderr with its file and line.

    python -m rmmscan.cli.rules list    # the same as: rmmscan rules list
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..text import printable
from .status import EXIT_ERROR, EXIT_OK

EXIT_FAILED = 1  # `rules test`: rows that fail


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `rules` and its sub-commands on an argparse sub-parsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--rules",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="a rule file, or a folder of them (repeatable); replaces the bundled pack",
    )
    parser = subparsers.add_parser(
        "rules",
        help="list, validate, test and export the rule pack",
        description="The rule pack: Sentinel hunting queries over DeviceFileCertificateInfo "
        "rows, evaluated on the endpoint.",
        epilog="exit status: 0 good, 1 test rows fail, 2 a problem in the pack or an input",
    )
    sub = parser.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    ls = sub.add_parser("list", parents=[common], help="each rule: id, columns, Defender, name")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    val = sub.add_parser(
        "validate", parents=[common], help="load the pack and report every problem in it"
    )
    val.add_argument(
        "--allowlist",
        type=Path,
        metavar="FILE",
        help="also check this allowlist, and that the rule ids it names are in the pack",
    )
    sub.add_parser(
        "test",
        parents=[common],
        help="run every rule's test rows (tests/<rule file> beside the rule)",
    )
    exp = sub.add_parser(
        "export",
        parents=[common],
        help="write each rule as a Sentinel hunting query for a table",
        description="Write each rule as a Sentinel hunting-query YAML file. defender: "
        "DeviceFileCertificateInfo (rules that read other columns are skipped, with the "
        "reason); custom: rmmscan's RmmScanFileCertificateInfo_CL.",
    )
    exp.add_argument("--table", choices=("defender", "custom"), required=True)
    exp.add_argument("--output", type=Path, required=True, metavar="DIR")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..rules.pack import RuleLoadError, load_pack

    try:
        pack = load_pack(args.rules or None)
    except RuleLoadError as exc:
        _problems(exc.problems, "the rule pack")
        return EXIT_ERROR
    command = {"list": _list, "validate": _validate, "test": _test, "export": _export}
    return command[args.rules_command](pack, args)


def _problems(problems, what: str) -> None:
    for problem in problems:
        print(printable(str(problem)), file=sys.stderr)
    count = len(problems)
    print(f"rmmscan rules: {count} problem{'s' * (count != 1)} in {what}", file=sys.stderr)


def _list(pack, args) -> int:
    if args.format == "json":
        for rule in pack:
            print(json.dumps({
                "id": rule.id, "name": rule.name, "path": rule.path,
                "columns": sorted(rule.columns), "defender_compatible": rule.defender_compatible,
                "tactics": list(rule.tactics), "techniques": list(rule.techniques),
            }, ensure_ascii=False))  # fmt: skip
        return EXIT_OK
    print("ID                                    DEFENDER  NAME [COLUMNS]")
    for rule in pack:
        defender = "yes" if rule.defender_compatible else "no"
        columns = ", ".join(sorted(rule.columns))
        print(f"{rule.id}  {defender:<8}  {printable(rule.name)} [{columns}]")
    return EXIT_OK


def _validate(pack, args) -> int:
    if args.allowlist is not None:
        from ..rules.allowlist import load_allowlist
        from ..rules.pack import RuleLoadError

        try:
            allowlist = load_allowlist(args.allowlist, pack=pack)
        except RuleLoadError as exc:
            _problems(exc.problems, "the allowlist")
            return EXIT_ERROR
        print(f"allowlist: {len(allowlist)} entr{'y' if len(allowlist) == 1 else 'ies'}, ok")
    defender = sum(rule.defender_compatible for rule in pack)
    print(f"{len(pack)} rules, ok ({defender} run unchanged on Defender's table)")
    return EXIT_OK


def _test(pack, args) -> int:
    from ..rules.testrows import run_tests

    report = run_tests(pack)
    for failure in report.failures:
        print(printable(str(failure)))
    if report.problems:
        _problems(report.problems, "the test rows")
        return EXIT_ERROR
    failed = len(report.failures)
    rules = len({id(r.rule) for r in report.results})
    print(f"{len(report.results)} rows of {rules} rules: "
          + (f"{failed} failed" if failed else "all pass"))  # fmt: skip
    return EXIT_FAILED if failed else EXIT_OK


def _export(pack, args) -> int:
    from ..rules.export import export

    exported = export(pack, args.table)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        for item in exported:
            if item.text is not None:
                (args.output / item.filename).write_text(item.text, "utf-8", newline="\n")
    except OSError as exc:
        print(f"rmmscan rules: {printable(str(args.output))}: {exc.strerror or exc}",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    skipped = [item for item in exported if item.text is None]
    for item in skipped:
        print(f"skipped {printable(item.filename)}: {item.reason}", file=sys.stderr)
    written = (
        f"wrote {len(exported) - len(skipped)} hunting queries to {printable(str(args.output))}"
    )
    print(written + (f", skipped {len(skipped)}" if skipped else ""))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """`python -m rmmscan.cli.rules COMMAND ...`, the same as `rmmscan rules COMMAND ...`."""
    parser = argparse.ArgumentParser(prog="rmmscan")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rules", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
