#!/usr/bin/env python3
"""An independent JUnit consumer's view of a coldboot bundle.

Reads BUNDLE/junit.xml with junitparser (PyPI), and checks it against BUNDLE/report.json:
one testcase per pair, the failures and errors counted as the verdicts say, each
non-success carrying a message, and each testcase's system-out naming its run folder.

    python3 tests/junit_consumer.py BUNDLE_DIR

Exit 0 when all holds, 1 with the reasons otherwise, 2 when junitparser is missing.
"""

import json
import sys
from pathlib import Path

try:
    from junitparser import Error, Failure, JUnitXml, Skipped
except ImportError:
    print("junitparser is not installed: pip install junitparser", file=sys.stderr)
    sys.exit(2)


def check(bundle: Path) -> list[str]:
    report = json.loads((bundle / "report.json").read_text())
    pairs = report["pairs"]
    xml = JUnitXml.fromfile(str(bundle / "junit.xml"))
    problems = []

    cases = [(suite, case) for suite in xml for case in suite]
    if len(cases) != len(pairs):
        problems.append(f"{len(cases)} testcases for {len(pairs)} pairs")

    want_errors = sum(1 for p in pairs if p["verdict_word"] == "error")
    want_failures = sum(
        1 for p in pairs if not p["matches_plan"] and p["verdict_word"] != "error"
    )
    got_errors = sum(1 for _, c in cases if any(isinstance(r, Error) for r in c.result))
    got_failures = sum(1 for _, c in cases if any(isinstance(r, Failure) for r in c.result))
    if (got_errors, got_failures) != (want_errors, want_failures):
        problems.append(
            f"errors/failures {got_errors}/{got_failures}, report.json says {want_errors}/{want_failures}"
        )
    if xml.tests != len(pairs) or xml.errors != want_errors or xml.failures != want_failures:
        problems.append(
            f"<testsuites> totals tests={xml.tests} errors={xml.errors} failures={xml.failures}"
        )

    for p in pairs:
        classname = f"{p['target_name']}.{p['scenario']}"
        found = [c for s, c in cases if c.classname == classname and c.name == p["scenario"]]
        if len(found) != 1:
            problems.append(f"{p['id']}: {len(found)} testcases named {classname}")
            continue
        case = found[0]
        out = case.system_out or ""
        if p["run_dir"] not in out:
            problems.append(f"{p['id']}: system-out does not name {p['run_dir']}")
        results = [r for r in case.result if not isinstance(r, Skipped)]
        if p["matches_plan"] and p["verdict_word"] != "error":
            if results:
                problems.append(f"{p['id']}: as planned, but not a success")
        elif not results or not (results[0].message or "").strip():
            problems.append(f"{p['id']}: a non-success without a message")
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    bundle = Path(sys.argv[1])
    problems = check(bundle)
    for p in problems:
        print(f"{bundle}/junit.xml: {p}", file=sys.stderr)
    if not problems:
        print(f"{bundle}/junit.xml: junitparser reads it, counts match report.json")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
