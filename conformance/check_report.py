"""Check an Autobahn|Testsuite fuzzingclient report (``index.json``) against relay's bar.

The bar (issue "Hardening"): no case FAILED or UNIMPLEMENTED, and every closing behaviour OK or
INFORMATIONAL.  NON-STRICT cases are counted and shown but do not fail the run: the RFC allows
that behaviour (e.g. failing a bad UTF-8 message late), the suite only prefers a stricter one.

One exception, only with ``--all``: relay does not offer permessage-deflate, so the suite reports
the compression cases 12.* and 13.* as UNIMPLEMENTED.  That is a decision, not a defect (per-slave
compression contexts would break encode-once fan-out, and compressing mixed secret and
attacker-controlled DOM content is a CRIME/BREACH-style length oracle), so those cases are
accepted there and counted apart.  The CI set does not include them, so no exception applies.

Standard library only, so that it runs on the interpreter that runs relay.

    python conformance/check_report.py reports/servers/index.json [--all] [--agent relay]
        [--expect-cases 1.* 2.* ...] [--summary-json PATH] [--summary-md PATH]

Exit status: 0 when the bar is met, 1 when not, 2 when the report cannot be read.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

OK = "OK"
NON_STRICT = "NON-STRICT"
INFORMATIONAL = "INFORMATIONAL"
FAILED = "FAILED"
UNIMPLEMENTED = "UNIMPLEMENTED"

# Verdicts of the suite's "behavior" field, in the order the summary lists them.
BEHAVIOURS = (OK, INFORMATIONAL, NON_STRICT, FAILED, UNIMPLEMENTED)
ACCEPTED_BEHAVIOURS = frozenset({OK, INFORMATIONAL, NON_STRICT})
ACCEPTED_CLOSE_BEHAVIOURS = frozenset({OK, INFORMATIONAL})

# Case groups that may be UNIMPLEMENTED, and only in a full run: the permessage-deflate cases.
COMPRESSION_CASE_GROUPS = ("12", "13")
COMPRESSION_REASON = ("permessage-deflate is not offered by relay (encode-once fan-out; "
                      "CRIME/BREACH-style oracle on mixed secret/attacker-controlled content)")


class ReportError(Exception):
    """The report is missing, unreadable or not shaped like a fuzzingclient index."""


@dataclass
class Verdict:
    case_id: str
    behaviour: str
    close_behaviour: str
    problems: list = field(default_factory=list)  # why this case fails the bar; empty when it passes
    excused: bool = False  # UNIMPLEMENTED, accepted as a compression case in a full run


@dataclass
class Summary:
    agent: str
    mode: str  # "ci" or "all"
    verdicts: list

    @property
    def total(self) -> int:
        return len(self.verdicts)

    def count(self, behaviour: str) -> int:
        return sum(1 for verdict in self.verdicts if verdict.behaviour == behaviour)

    @property
    def failures(self) -> list:
        return [verdict for verdict in self.verdicts if verdict.problems]

    @property
    def excused(self) -> list:
        return [verdict for verdict in self.verdicts if verdict.excused and not verdict.problems]

    @property
    def close_counts(self) -> dict:
        counts: dict = {}
        for verdict in self.verdicts:
            counts[verdict.close_behaviour] = counts.get(verdict.close_behaviour, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def passed(self) -> bool:
        return self.total > 0 and not self.failures

    def line(self) -> str:
        """The one-line summary, e.g. ``autobahn: 301 cases: 298 OK, 3 INFORMATIONAL, 0 NON-STRICT, 0 FAILED``."""
        parts = [f"{self.count(b)} {b}" for b in (OK, INFORMATIONAL, NON_STRICT, FAILED)]
        unimplemented = self.count(UNIMPLEMENTED)
        if unimplemented:
            excused = len(self.excused)
            note = f" ({excused} accepted: 12.*/13.* permessage-deflate not offered)" if excused else ""
            parts.append(f"{unimplemented} UNIMPLEMENTED{note}")
        other = self.total - sum(self.count(b) for b in BEHAVIOURS)
        if other:
            parts.append(f"{other} other")
        bad_close = sum(1 for v in self.verdicts if v.close_behaviour not in ACCEPTED_CLOSE_BEHAVIOURS)
        if bad_close:
            parts.append(f"{bad_close} bad close")
        return f"autobahn: {self.total} cases: " + ", ".join(parts)

    def to_json(self) -> dict:
        return {
            "agent": self.agent,
            "mode": self.mode,
            "cases": self.total,
            "passed": self.passed,
            "behaviour": {b: self.count(b) for b in BEHAVIOURS},
            "close_behaviour": self.close_counts,
            "accepted_unimplemented": {
                "cases": [v.case_id for v in self.excused],
                "reason": COMPRESSION_REASON,
            } if self.excused else None,
            "non_strict": [v.case_id for v in self.verdicts if v.behaviour == NON_STRICT],
            "informational": [v.case_id for v in self.verdicts if v.behaviour == INFORMATIONAL],
            "failures": [{"case": v.case_id, "behavior": v.behaviour, "behaviorClose": v.close_behaviour,
                          "problems": v.problems} for v in self.failures],
            "summary": self.line(),
        }

    def to_markdown(self, title: str = "") -> str:
        lines = [f"### {title or 'Autobahn|Testsuite'} ({self.mode} set, agent {self.agent})", "",
                 f"`{self.line()}`", "",
                 "| behaviour | cases |", "|---|---:|"]
        lines += [f"| {b} | {self.count(b)} |" for b in BEHAVIOURS]
        lines += ["", "| close behaviour | cases |", "|---|---:|"]
        lines += [f"| {name} | {n} |" for name, n in self.close_counts.items()]
        for label, behaviour in (("NON-STRICT", NON_STRICT), ("INFORMATIONAL", INFORMATIONAL)):
            ids = [v.case_id for v in self.verdicts if v.behaviour == behaviour]
            if ids:
                lines += ["", f"{label}: " + ", ".join(ids)]
        if self.excused:
            lines += ["", f"UNIMPLEMENTED accepted for {len(self.excused)} cases (12.*, 13.*): {COMPRESSION_REASON}."]
        if self.failures:
            lines += ["", "Failures:"]
            lines += [f"- {v.case_id}: " + "; ".join(v.problems) for v in self.failures]
        return "\n".join(lines) + "\n"


def case_sort_key(case_id: str) -> tuple:
    """Numeric order: 1.1.2 before 1.1.10, 9.* before 10.*."""
    return tuple(int(part) if part.isdigit() else 0 for part in case_id.split("."))


def is_compression_case(case_id: str) -> bool:
    return case_id.split(".", 1)[0] in COMPRESSION_CASE_GROUPS


def judge_case(case_id: str, result: dict, *, full_run: bool) -> Verdict:
    behaviour = result.get("behavior")
    close_behaviour = result.get("behaviorClose")
    if not isinstance(behaviour, str) or not isinstance(close_behaviour, str):
        raise ReportError(f"case {case_id}: no 'behavior'/'behaviorClose' verdict")
    verdict = Verdict(case_id, behaviour, close_behaviour)
    if behaviour == UNIMPLEMENTED and full_run and is_compression_case(case_id):
        verdict.excused = True  # the closing handshake is still held to the bar below
    elif behaviour == UNIMPLEMENTED and is_compression_case(case_id):
        verdict.problems.append("UNIMPLEMENTED (compression cases are accepted only with --all)")
    elif behaviour not in ACCEPTED_BEHAVIOURS:
        verdict.problems.append(f"behavior {behaviour}")
    if close_behaviour not in ACCEPTED_CLOSE_BEHAVIOURS:
        verdict.problems.append(f"behaviorClose {close_behaviour}")
    return verdict


def load_report(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ReportError(f"{path}: not a fuzzingclient index (expected {{agent: {{case: result}}}})")
    return data


def summarise(report: dict, *, full_run: bool, agent: Optional[str] = None,
              expected_patterns: Iterable[str] = ()) -> Summary:
    """Judge every case of one agent.  ``expected_patterns`` (e.g. ``["1.*", "9.*"]``): each must
    match at least one case and every case must match one, so a short or wrong run cannot pass."""
    if agent is None:
        if len(report) != 1:
            raise ReportError(f"the report holds agents {sorted(report)}: say which with --agent")
        agent = next(iter(report))
    cases = report.get(agent)
    if not isinstance(cases, dict):
        raise ReportError(f"no agent {agent!r} in the report (agents: {sorted(report)})")
    verdicts = []
    for case_id in sorted(cases, key=case_sort_key):
        result = cases[case_id]
        if not isinstance(result, dict):
            raise ReportError(f"case {case_id}: result is not an object")
        verdicts.append(judge_case(case_id, result, full_run=full_run))
    summary = Summary(agent, "all" if full_run else "ci", verdicts)
    patterns = list(expected_patterns)
    if patterns:
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(v.case_id, pattern) for v in verdicts):
                raise ReportError(f"no case of {pattern} in the report: the run was cut short")
        for verdict in verdicts:
            if not any(fnmatch.fnmatchcase(verdict.case_id, pattern) for pattern in patterns):
                verdict.problems.append(f"not in the requested cases {' '.join(patterns)}")
    return summary


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="reports/servers/index.json")
    parser.add_argument("--all", action="store_true",
                        help="a full run: accept UNIMPLEMENTED for 12.* and 13.* (no permessage-deflate)")
    parser.add_argument("--agent", help="agent name in the report (default: its only agent)")
    parser.add_argument("--expect-cases", nargs="*", default=[], metavar="PATTERN",
                        help="case patterns of the spec file; each must appear, nothing else may")
    parser.add_argument("--title", default="", help="heading of the markdown summary")
    parser.add_argument("--summary-json", type=Path, help="write the summary as JSON here")
    parser.add_argument("--summary-md", type=Path, help="write the summary as markdown here")
    args = parser.parse_args(argv)
    try:
        summary = summarise(load_report(args.report), full_run=args.all, agent=args.agent,
                            expected_patterns=args.expect_cases)
    except ReportError as exc:
        print(f"autobahn: report unusable: {exc}", file=sys.stderr)
        return 2
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    if args.summary_md:
        args.summary_md.write_text(summary.to_markdown(args.title), encoding="utf-8")
    for verdict in summary.failures:
        print(f"autobahn: case {verdict.case_id}: " + "; ".join(verdict.problems), file=sys.stderr)
    if summary.excused:
        print(f"autobahn: {len(summary.excused)} cases of 12.*/13.* UNIMPLEMENTED, accepted: {COMPRESSION_REASON}")
    print(summary.line())
    if summary.total == 0:
        print("autobahn: the report holds no case", file=sys.stderr)
    return 0 if summary.passed else 1


if __name__ == "__main__":
    sys.exit(main())
