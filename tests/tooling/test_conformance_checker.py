"""The Autobahn|Testsuite report checker (conformance/check_report.py) on small fake reports.

scripts/autobahn trusts this checker to turn a 300-case report into pass/fail, so these tests pin
down the bar: FAILED, UNIMPLEMENTED (except 12.*/13.* in a full run) and any close behaviour other
than OK/INFORMATIONAL fail; NON-STRICT is counted but passes; a report that is short, empty or
about the wrong cases cannot pass.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

CHECKER_PATH = Path(__file__).resolve().parents[2] / "conformance" / "check_report.py"


def _load_checker():
    spec = importlib.util.spec_from_file_location("relay_conformance_check_report", CHECKER_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check = _load_checker()

CI_PATTERNS = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]


def result(behaviour="OK", close="OK", **extra):
    return {"behavior": behaviour, "behaviorClose": close, "duration": 3, "remoteCloseCode": 1000,
            "reportfile": "relay_case.json", **extra}


def ci_cases(**overrides):
    """One OK case per group of the CI set, with ``overrides`` (case id -> result) applied."""
    cases = {f"{group}.1.1": result() for group in (1, 2, 3, 4, 5, 6, 7, 9, 10)}
    cases.update(overrides)
    return {"relay": cases}


def write_report(tmp_path: Path, report) -> Path:
    path = tmp_path / "index.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------- judging cases


def test_all_ok_passes_with_exact_summary_line():
    summary = check.summarise(ci_cases(), full_run=False, expected_patterns=CI_PATTERNS)
    assert summary.passed
    assert summary.total == 9
    assert summary.line() == "autobahn: 9 cases: 9 OK, 0 INFORMATIONAL, 0 NON-STRICT, 0 FAILED"


def test_informational_and_non_strict_pass_but_are_counted():
    report = ci_cases(**{"7.13.1": result("INFORMATIONAL", "INFORMATIONAL"), "3.2": result("NON-STRICT")})
    summary = check.summarise(report, full_run=False, expected_patterns=CI_PATTERNS)
    assert summary.passed
    assert summary.line() == "autobahn: 11 cases: 9 OK, 1 INFORMATIONAL, 1 NON-STRICT, 0 FAILED"
    assert summary.to_json()["non_strict"] == ["3.2"]
    assert summary.to_json()["informational"] == ["7.13.1"]


def test_failed_case_fails():
    summary = check.summarise(ci_cases(**{"9.7.1": result("FAILED", "UNCLEAN")}), full_run=False)
    assert not summary.passed
    [failure] = summary.failures
    assert failure.case_id == "9.7.1"
    assert failure.problems == ["behavior FAILED", "behaviorClose UNCLEAN"]
    assert "1 FAILED" in summary.line()


@pytest.mark.parametrize("close", ["FAILED BY CLIENT", "WRONG CODE", "UNCLEAN", "FAILED", "NON-STRICT"])
def test_close_behaviour_other_than_ok_or_informational_fails(close):
    summary = check.summarise(ci_cases(**{"7.9.1": result("OK", close)}), full_run=False)
    assert not summary.passed
    assert [v.case_id for v in summary.failures] == ["7.9.1"]
    assert summary.failures[0].problems == [f"behaviorClose {close}"]
    assert summary.line().endswith(", 1 bad close")


def test_unknown_behaviour_fails():
    summary = check.summarise(ci_cases(**{"1.1.2": result("SOMETHING NEW")}), full_run=False)
    assert not summary.passed
    assert summary.failures[0].problems == ["behavior SOMETHING NEW"]
    assert "1 other" in summary.line()


def test_unimplemented_fails_in_the_ci_set_even_for_compression_cases():
    report = ci_cases(**{"12.1.1": result("UNIMPLEMENTED", "UNIMPLEMENTED")})
    summary = check.summarise(report, full_run=False)
    assert not summary.passed
    assert "only with --all" in summary.failures[0].problems[0]
    assert summary.excused == []


def test_unimplemented_compression_cases_are_accepted_in_a_full_run():
    report = ci_cases(**{"12.1.1": result("UNIMPLEMENTED", "OK"),
                         "13.7.18": result("UNIMPLEMENTED", "INFORMATIONAL")})
    summary = check.summarise(report, full_run=True, expected_patterns=["*"])
    assert summary.passed
    assert [v.case_id for v in summary.excused] == ["12.1.1", "13.7.18"]
    assert "2 UNIMPLEMENTED (2 accepted: 12.*/13.* permessage-deflate not offered)" in summary.line()
    assert summary.to_json()["accepted_unimplemented"]["reason"] == check.COMPRESSION_REASON


def test_accepted_compression_case_still_needs_a_good_close():
    summary = check.summarise(ci_cases(**{"12.1.1": result("UNIMPLEMENTED", "UNCLEAN")}), full_run=True)
    assert not summary.passed
    assert summary.failures[0].problems == ["behaviorClose UNCLEAN"]
    assert summary.excused == []


@pytest.mark.parametrize("case_id", ["5.1", "1.12.1", "11.1", "120.1"])
def test_unimplemented_outside_12_and_13_fails_even_in_a_full_run(case_id):
    summary = check.summarise(ci_cases(**{case_id: result("UNIMPLEMENTED", "UNIMPLEMENTED")}), full_run=True)
    assert not summary.passed
    assert [v.case_id for v in summary.failures] == [case_id]
    assert summary.excused == []


def test_failed_compression_case_is_not_excused_in_a_full_run():
    summary = check.summarise(ci_cases(**{"12.2.3": result("FAILED", "OK")}), full_run=True)
    assert not summary.passed
    assert summary.failures[0].problems == ["behavior FAILED"]


def test_cases_are_listed_in_numeric_order():
    report = {"relay": {case_id: result() for case_id in ["10.1.1", "9.10.1", "9.2.1", "1.1.10", "1.1.2"]}}
    summary = check.summarise(report, full_run=False)
    assert [v.case_id for v in summary.verdicts] == ["1.1.2", "1.1.10", "9.2.1", "9.10.1", "10.1.1"]


# ------------------------------------------------------------------------------ the report's shape


def test_a_missing_group_means_the_run_was_cut_short():
    report = ci_cases()
    del report["relay"]["10.1.1"]
    with pytest.raises(check.ReportError, match=r"10\.\*"):
        check.summarise(report, full_run=False, expected_patterns=CI_PATTERNS)


def test_a_case_outside_the_requested_set_fails():
    summary = check.summarise(ci_cases(**{"12.1.1": result()}), full_run=False, expected_patterns=CI_PATTERNS)
    assert not summary.passed
    assert [v.case_id for v in summary.failures] == ["12.1.1"]


def test_an_empty_agent_does_not_pass():
    summary = check.summarise({"relay": {}}, full_run=False)
    assert not summary.passed
    assert summary.line() == "autobahn: 0 cases: 0 OK, 0 INFORMATIONAL, 0 NON-STRICT, 0 FAILED"


def test_several_agents_need_a_choice():
    report = {"relay": {"1.1.1": result()}, "other": {"1.1.1": result("FAILED")}}
    with pytest.raises(check.ReportError, match="--agent"):
        check.summarise(report, full_run=False)
    assert check.summarise(report, full_run=False, agent="relay").passed
    assert not check.summarise(report, full_run=False, agent="other").passed
    with pytest.raises(check.ReportError, match="no agent"):
        check.summarise(report, full_run=False, agent="missing")


def test_a_case_without_verdicts_is_unusable():
    with pytest.raises(check.ReportError, match="1.1.1"):
        check.summarise({"relay": {"1.1.1": {"duration": 2}}}, full_run=False)


# ------------------------------------------------------------------------------------ command line


def test_main_passes_and_writes_summaries(tmp_path, capsys):
    report = ci_cases(**{"7.13.1": result("INFORMATIONAL", "INFORMATIONAL")})
    path = write_report(tmp_path, report)
    status = check.main([str(path), "--expect-cases", *CI_PATTERNS, "--summary-json", str(tmp_path / "s.json"),
                         "--summary-md", str(tmp_path / "s.md"), "--title", "fake"])
    assert status == 0
    line = "autobahn: 10 cases: 9 OK, 1 INFORMATIONAL, 0 NON-STRICT, 0 FAILED"
    assert capsys.readouterr().out.strip().splitlines()[-1] == line
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["passed"] is True
    assert written["summary"] == line
    assert written["behaviour"] == {"OK": 9, "INFORMATIONAL": 1, "NON-STRICT": 0, "FAILED": 0, "UNIMPLEMENTED": 0}
    assert written["close_behaviour"] == {"INFORMATIONAL": 1, "OK": 9}
    markdown = (tmp_path / "s.md").read_text()
    assert markdown.startswith("### fake (ci set, agent relay)")
    assert f"`{line}`" in markdown
    assert "INFORMATIONAL: 7.13.1" in markdown


def test_main_fails_and_names_the_case(tmp_path, capsys):
    path = write_report(tmp_path, ci_cases(**{"6.4.1": result("OK", "WRONG CODE")}))
    assert check.main([str(path)]) == 1
    captured = capsys.readouterr()
    assert "case 6.4.1: behaviorClose WRONG CODE" in captured.err


def test_main_all_mode_accepts_only_compression_unimplemented(tmp_path, capsys):
    report = ci_cases(**{"12.1.1": result("UNIMPLEMENTED", "OK")})
    path = write_report(tmp_path, report)
    assert check.main([str(path)]) == 1
    assert check.main([str(path), "--all"]) == 0
    assert "permessage-deflate is not offered" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["not json", "[]", "{}", '{"relay": []}'])
def test_main_reports_an_unusable_report(tmp_path, capsys, content):
    path = tmp_path / "index.json"
    path.write_text(content)
    assert check.main([str(path)]) == 2
    assert "report unusable" in capsys.readouterr().err


def test_main_reports_a_missing_file(tmp_path, capsys):
    assert check.main([str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- properties

BEHAVIOUR_VALUES = st.sampled_from(["OK", "INFORMATIONAL", "NON-STRICT", "FAILED", "UNIMPLEMENTED"])
CLOSE_VALUES = st.sampled_from(["OK", "INFORMATIONAL", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "UNIMPLEMENTED"])
CASE_IDS = st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.integers(1, 13), st.integers(1, 20), st.integers(1, 20))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(CASE_IDS, st.tuples(BEHAVIOUR_VALUES, CLOSE_VALUES), min_size=1, max_size=30),
       st.booleans())
def test_passing_means_every_case_meets_the_bar(cases, full_run):
    report = {"relay": {case_id: result(b, c) for case_id, (b, c) in cases.items()}}
    summary = check.summarise(report, full_run=full_run)

    def acceptable(case_id, behaviour, close):
        if close not in ("OK", "INFORMATIONAL"):
            return False
        if behaviour == "UNIMPLEMENTED" and full_run and case_id.split(".")[0] in ("12", "13"):
            return True
        return behaviour in ("OK", "INFORMATIONAL", "NON-STRICT") and close in ("OK", "INFORMATIONAL")

    expected_failures = sorted((case_id for case_id, (b, c) in cases.items() if not acceptable(case_id, b, c)),
                               key=check.case_sort_key)
    assert [v.case_id for v in summary.failures] == expected_failures
    assert summary.passed == (not expected_failures)
    assert sum(summary.count(b) for b in check.BEHAVIOURS) == summary.total == len(cases)
    assert sum(summary.close_counts.values()) == len(cases)
