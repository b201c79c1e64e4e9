"""The KQL predicate engine against Kusto's documentation, the rule pack and a brute-force `has`.

Doc examples are cited by page; the pages are under https://learn.microsoft.com/kusto/query/
(markdown sources: github.com/MicrosoftDocs/dataexplorer-docs, data-explorer/kusto/query/).
Where a page shows a query over the StormEvents sample table and its output, the output rows are
the rows the predicate keeps, and rows the page's other outputs show are rows it drops.
"""

from __future__ import annotations

import pickle
import unicodedata
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rmmscan.rows.columns import QUERYABLE
from rmmscan.rules.kql import TABLES, KqlError, Predicate, Query, parse_predicate, parse_query

# The StormEvents columns the doc examples use, plus S for the one-line table examples.
STORM = {"State": "string", "EventType": "string", "EpisodeNarrative": "string", "S": "string"}

# The upstream files byte for byte, committed beside the rule pack (rules/README.md).
UPSTREAM = Path(__file__).resolve().parents[2] / "rules" / "upstream"


def kept(predicate: str, rows: list[dict], columns=STORM) -> list[dict]:
    """The rows Kusto's `where predicate` keeps."""
    compiled = parse_predicate(predicate, columns=columns)
    return [row for row in rows if compiled.evaluate(row.get)]


def states(predicate: str, names: list[str]) -> list[str]:
    return [row["State"] for row in kept(predicate, [{"State": n} for n in names])]


def holds(predicate: str, columns=QUERYABLE, **row) -> bool:
    return parse_predicate(predicate, columns=columns).evaluate(row.get)


def s_holds(predicate: str, value: str) -> bool:
    return holds(predicate, columns=STORM, S=value)


def refusal(text: str, *, predicate: bool = False, **kwargs) -> KqlError:
    parse = parse_predicate if predicate else parse_query
    with pytest.raises(KqlError) as info:
        parse(text, **kwargs)
    return info.value


# ---------------------------------------------------------------------------------------------
# The summary table of https://learn.microsoft.com/kusto/query/datatypes-string-operators:
# every "Example (yields true)". Each also fails with the operator negated.

TABLE_EXAMPLES = [
    ('"aBc"', "==", '"aBc"'),
    ('"abc"', "!=", '"ABC"'),
    ('"abc"', "=~", '"ABC"'),
    ('"aBc"', "!~", '"xyz"'),
    ('"FabriKam"', "contains", '"BRik"'),
    ('"Fabrikam"', "!contains", '"xyz"'),
    ('"FabriKam"', "contains_cs", '"Kam"'),
    ('"Fabrikam"', "!contains_cs", '"Kam"'),
    ('"Fabrikam"', "endswith", '"Kam"'),
    ('"Fabrikam"', "!endswith", '"brik"'),
    ('"Fabrikam"', "endswith_cs", '"kam"'),
    ('"Fabrikam"', "!endswith_cs", '"brik"'),
    ('"North America"', "has", '"america"'),
    ('"North America"', "!has", '"amer"'),
    ('"North and South America"', "has_all", '("south", "north")'),
    ('"North America"', "has_any", '("south", "north")'),
    ('"North America"', "has_cs", '"America"'),
    ('"North America"', "!has_cs", '"amer"'),
    ('"abc"', "in", '("123", "345", "abc")'),
    ('"bca"', "!in", '("123", "345", "abc")'),
    ('"Abc"', "in~", '("123", "345", "abc")'),
    ('"bCa"', "!in~", '("123", "345", "ABC")'),
    ('"Fabrikam"', "matches regex", '"b.*k"'),
    ('"Fabrikam"', "startswith", '"fab"'),
    ('"Fabrikam"', "!startswith", '"kam"'),
    ('"Fabrikam"', "startswith_cs", '"Fab"'),
    ('"Fabrikam"', "!startswith_cs", '"fab"'),
    # The 2020 revision of the same page: in~ with the upper-case element.
    ('"abc"', "in~", '("123", "345", "ABC")'),
]
NEGATION = {
    "==": "!=", "!=": "==", "=~": "!~", "!~": "=~", "in": "!in", "!in": "in", "in~": "!in~",
    "!in~": "in~",
}  # fmt: skip


@pytest.mark.parametrize(("left", "op", "right"), TABLE_EXAMPLES)
def test_string_operators_table_examples(left, op, right):
    signer = left[1:-1]
    assert holds(f"Signer {op} {right}", Signer=signer)
    if op in ("has_all", "has_any", "matches regex"):
        return
    negated = NEGATION.get(op, op[1:] if op.startswith("!") else "!" + op)
    assert not holds(f"Signer {negated} {right}", Signer=signer)


# ---------------------------------------------------------------------------------------------
# Operator pages, their StormEvents examples.


def test_has_page():
    # https://learn.microsoft.com/kusto/query/has-operator : State has "New"
    documented = ["NEW YORK", "NEW JERSEY", "NEW MEXICO", "NEW HAMPSHIRE"]
    others = ["TEXAS", "KANSAS", "NEVADA", "RENEWAL"]  # "NEVADA"/"RENEWAL": "new"/"ne" not a term
    assert states('State has "New"', documented + others) == documented


def test_not_has_page():
    # https://learn.microsoft.com/kusto/query/not-has-operator : !has "NEW" keeps TEXAS, KANSAS
    assert states('State !has "NEW"', ["TEXAS", "KANSAS", "NEW YORK", "NEW JERSEY"]) == [
        "TEXAS",
        "KANSAS",
    ]


def test_has_cs_page():
    # https://learn.microsoft.com/kusto/query/has-cs-operator : FLORIDA; "florida" yields nothing
    assert states('State has_cs "FLORIDA"', ["FLORIDA", "GEORGIA"]) == ["FLORIDA"]
    assert states('State has_cs "florida"', ["FLORIDA", "GEORGIA"]) == []
    assert states('State !has_cs "florida"', ["FLORIDA"]) == ["FLORIDA"]


def test_has_any_page():
    # https://learn.microsoft.com/kusto/query/has-anyoperator : ("CAROLINA", "DAKOTA", "NEW")
    documented = [
        "NEW YORK", "NORTH CAROLINA", "SOUTH DAKOTA", "NEW JERSEY", "SOUTH CAROLINA",
        "NORTH DAKOTA", "NEW MEXICO", "NEW HAMPSHIRE",
    ]  # fmt: skip
    others = ["TEXAS", "KANSAS", "ATLANTIC SOUTH", "ATLANTIC NORTH"]
    assert states('State has_any ("CAROLINA", "DAKOTA", "NEW")', documented + others) == documented
    # The same page, with ['south', 'north']: lower-case needles, upper-case values.
    second = [
        "NORTH CAROLINA", "SOUTH DAKOTA", "SOUTH CAROLINA", "NORTH DAKOTA", "ATLANTIC SOUTH",
        "ATLANTIC NORTH",
    ]  # fmt: skip
    assert states("State has_any ('south', 'north')", [*second, "NEW YORK", "TEXAS"]) == second


def test_has_all_page():
    # https://learn.microsoft.com/kusto/query/has-all-operator : four terms, in any order
    predicate = 'EpisodeNarrative has_all ("cold", "strong", "afternoon", "hail")'
    rows = [
        {"EpisodeNarrative": "A strong cold front brought hail in the afternoon."},
        {"EpisodeNarrative": "Strong winds and hail during the afternoon."},  # no "cold"
        {"EpisodeNarrative": "A COLD, STRONG AFTERNOON HAIL-storm"},
        {"EpisodeNarrative": "coldest strongest afternoons hailstorm"},  # no whole terms
    ]
    assert [r["EpisodeNarrative"][:6] for r in kept(predicate, rows)] == ["A stro", "A COLD"]


def test_contains_page():
    # https://learn.microsoft.com/kusto/query/contains-operator : State contains "enn"
    names = ["PENNSYLVANIA", "TENNESSEE", "TEXAS", "KANSAS"]
    assert states('State contains "enn"', names) == ["PENNSYLVANIA", "TENNESSEE"]
    assert states('State contains_cs "enn"', names) == []
    assert states('State contains_cs "ENN"', names) == ["PENNSYLVANIA", "TENNESSEE"]


def test_not_contains_page():
    # https://learn.microsoft.com/kusto/query/not-contains-operator : State !contains "kan"
    assert states('State !contains "kan"', ["TEXAS", "KANSAS", "ARKANSAS"]) == ["TEXAS"]
    assert states('State !contains_cs "kan"', ["TEXAS", "KANSAS"]) == ["TEXAS", "KANSAS"]


def test_startswith_page():
    # https://learn.microsoft.com/kusto/query/startswith-operator : State startswith "Lo"
    assert states('State startswith "Lo"', ["LOUISIANA", "TEXAS", "ILLINOIS"]) == ["LOUISIANA"]
    assert states('State startswith_cs "Lo"', ["LOUISIANA"]) == []
    assert states('State startswith_cs "LO"', ["LOUISIANA"]) == ["LOUISIANA"]


def test_not_startswith_page():
    # https://learn.microsoft.com/kusto/query/not-startswith-operator : State !startswith "i"
    names = ["TEXAS", "KANSAS", "IOWA", "MISSOURI", "ILLINOIS"]
    assert states('State !startswith "i"', names) == ["TEXAS", "KANSAS", "MISSOURI"]
    assert states('State !startswith_cs "i"', names) == names


def test_endswith_page():
    # https://learn.microsoft.com/kusto/query/endswith-operator : State endswith "sas"
    names = ["KANSAS", "ARKANSAS", "TEXAS", "NEBRASKA"]
    assert states('State endswith "sas"', names) == ["KANSAS", "ARKANSAS"]
    assert states('State !endswith "sas"', names) == ["TEXAS", "NEBRASKA"]
    assert states('State endswith_cs "sas"', names) == []


def test_equals_pages():
    # https://learn.microsoft.com/kusto/query/equals-operator : State =~ "kansas" matches KANSAS
    assert states('State =~ "kansas"', ["KANSAS", "ARKANSAS", "TEXAS"]) == ["KANSAS"]
    # https://learn.microsoft.com/kusto/query/not-equals-operator : State !~ "texas" keeps KANSAS
    assert states('(State !~ "texas")', ["TEXAS", "KANSAS"]) == ["KANSAS"]
    # https://learn.microsoft.com/kusto/query/logical-operators : == is case-sensitive
    assert states('State == "KANSAS"', ["KANSAS", "kansas"]) == ["KANSAS"]
    assert states('State != "KANSAS"', ["KANSAS", "kansas"]) == ["kansas"]


def test_in_pages():
    # https://learn.microsoft.com/kusto/query/in-cs-operator : ("FLORIDA", "GEORGIA", "NEW YORK")
    names = ["FLORIDA", "GEORGIA", "NEW YORK", "Florida", "TEXAS", "NEW YORK CITY"]
    assert states('State in ("FLORIDA", "GEORGIA", "NEW YORK")', names) == names[:3]
    # https://learn.microsoft.com/kusto/query/in-operator : in~ ("FLORIDA", "georgia", "NEW YORK")
    assert states('State in~ ("FLORIDA", "georgia", "NEW YORK")', names) == names[:4]
    # https://learn.microsoft.com/kusto/query/not-in-operator : !in~ ("Florida", "Georgia",
    # "New York") keeps KANSAS, IOWA, NEBRASKA...
    rest = ["KANSAS", "IOWA", "NEBRASKA", "FLORIDA", "GEORGIA", "NEW YORK"]
    assert states('State !in~ ("Florida", "Georgia", "New York")', rest) == rest[:3]
    assert states('State !in ("Florida", "Georgia", "New York")', rest) == rest


def test_matches_regex_page():
    # https://learn.microsoft.com/kusto/query/matches-regex-operator : State matches regex "K.*S";
    # a match anywhere in the value (LAKE SUPERIOR), case-sensitive.
    documented = ["KANSAS", "ARKANSAS", "LAKE SUPERIOR", "LAKE ST CLAIR"]
    assert states('State matches regex "K.*S"', [*documented, "TEXAS", "kansas"]) == documented


def test_logical_operators_page():
    # https://learn.microsoft.com/kusto/query/logical-operators
    rows = [
        {"EventType": "Tornado", "State": "KANSAS"},
        {"EventType": "Tornado", "State": "TEXAS"},
        {"EventType": "Thunderstorm Wind", "State": "KANSAS"},
        {"EventType": "Hail", "State": "KANSAS"},
    ]
    both = 'EventType == "Tornado" and State == "KANSAS"'
    assert kept(both, rows) == rows[:1]
    either = 'EventType == "Tornado" or EventType == "Thunderstorm Wind"'
    assert kept(either, rows) == rows[:3]
    assert kept('EventType != "Tornado"', rows) == rows[2:]


def test_not_function_page():
    # https://learn.microsoft.com/kusto/query/not-function
    rows = [
        {"EventType": "Hail", "State": "TEXAS"},
        {"EventType": "Tornado", "State": "ALASKA"},
        {"EventType": "Hail", "State": "ALASKA"},
        {"EventType": "Flood", "State": "IOWA"},
    ]
    assert kept('not(EventType == "Tornado")', rows) == [rows[0], rows[2], rows[3]]
    assert kept('not(EventType == "Hail" or State == "ALASKA")', rows) == [rows[3]]
    assert kept('not(EventType == "Hail" and State == "ALASKA")', rows) == rows[:2] + rows[3:]


def test_isempty_isnotempty_pages():
    # https://learn.microsoft.com/kusto/query/isempty-function : "" -> true, "x" -> false, and
    # isnotempty (https://learn.microsoft.com/kusto/query/isnotempty-function) on any scalar.
    assert holds("isempty(Signer)", Signer="")
    assert not holds("isempty(Signer)", Signer="x")
    assert holds("isnotempty(Signer)", Signer="x")
    assert not holds("isnotempty(Signer)", Signer="")
    assert holds("isempty(IsTrusted)", IsTrusted=None)
    assert not holds("isempty(FileSize)", FileSize=0)
    assert holds("isnotempty(FileSize)", FileSize=0)
    assert holds("isempty(CertificateCountersignatureTime)", CertificateCountersignatureTime=None)


# ---------------------------------------------------------------------------------------------
# has: terms, phrases, ASCII-only case folding (required examples, and the rule pack's needles)


@pytest.mark.parametrize(
    ("signer", "expected"),
    [
        ("DWSNET OÜ", True),
        ("DWSNET OÜ Ltd", True),
        ("dwsnet OÜ", True),
        ("Dwsnet OÜ, Tallinn", True),
        ("(DWSNET OÜ)", True),
        ("XDWSNET OÜ", False),
        ("DWSNET OÜX", False),
        ("dwsnet oü", False),
        ("DWSNET OU", False),
        ("DWSNET  OÜ", False),
        ("DWSNET-OÜ", False),
        ("DWSNET srl", False),
        ("", False),
        (None, False),
    ],
)
def test_has_phrase_required_examples(signer, expected):
    assert holds("Signer has 'DWSNET OÜ'", Signer=signer) is expected
    assert holds("Signer !has 'DWSNET OÜ'", Signer=signer) is not expected


def test_non_ascii_letters_are_term_characters():
    # "maximal sequences of alphanumeric characters": Krämer is one term, not "Kr" and "mer".
    assert holds("Signer has 'Krämer IT Solutions GmbH'", Signer="Krämer IT Solutions GmbH")
    assert holds("Signer has 'Krämer'", Signer="Krämer IT Solutions GmbH")
    assert not holds("Signer has 'mer'", Signer="Krämer IT Solutions GmbH")
    assert not holds("Signer has 'Kr'", Signer="Krämer IT Solutions GmbH")
    assert not holds("Signer has 'KRÄMER'", Signer="Krämer IT Solutions GmbH")
    assert holds("Signer has 'KRäMER'", Signer="Krämer IT Solutions GmbH")  # ASCII letters fold
    assert not holds("Signer has 'Caf'", Signer="Café Ltd")
    assert not holds("Signer has '東京'", Signer="株式会社東京")
    assert holds("Signer has '2'", Signer="x²2")  # ² (No) is not a digit term character
    assert holds("Signer has 'a'", Signer="a_b")  # _ separates terms


@pytest.mark.parametrize(
    ("needle", "signer", "expected"),
    [
        ("Servably, Inc.", "Servably, Inc.", True),
        ("Servably, Inc.", "SERVABLY, INC.", True),
        ("Servably, Inc.", "Servably, Inc.,", True),
        ("Servably, Inc.", "Servably, Inc", False),
        ("Servably, Inc.", "Servably Inc.", False),
        ("Level Software, Inc", "Level Software, Inc.", True),
        ("Level Software, Inc", "Level Software, Incorporated", False),
        ("PDQ.com", "PDQ.com, Inc.", True),
        ("PDQ.com", "PDQ com", False),
        ("PDQ.com", "XPDQ.com", False),
        ("PDQ.com", "PDQ.community", False),
        (".exe", "notepad.exe", True),
        (".exe", "notepad.exe.bak", True),
        (".exe", "notepad.exec", False),
        (".exe", "notepadexe", False),
        ("Projector.is, Inc.", "Projector.is, Inc.", True),
        ("XLAB D.O.O.", "XLAB d.o.o.", True),
        ("aweray pte. ltd.", "AweRay Pte. Ltd.", True),
    ],
)
def test_has_needles_with_punctuation(needle, signer, expected):
    quoted = needle.replace("'", "\\'")
    assert holds(f"Signer has '{quoted}'", Signer=signer) is expected


@pytest.mark.parametrize(
    ("predicate", "value", "expected"),
    [
        # "Case-insensitive operators are currently supported only for ASCII-text" (in~, has,
        # startswith, endswith, not-contains-cs pages): Ü matches only Ü.
        ("S =~ 'ÜBER'", "über", False),
        ("S =~ 'ÜBER'", "Über", True),
        ("S =~ 'ÜBER'", "ÜbEr", True),
        ("S !~ 'ÜBER'", "über", True),
        ("S contains 'Ü'", "ü", False),
        ("S contains 'É'", "café", False),
        ("S contains 'CAF'", "café", True),
        ("S startswith 'é'", "École", False),
        ("S endswith 'É'", "café", False),
        ("S in~ ('straße')", "STRASSE", False),
        ("S in~ ('straße')", "STRAßE", True),
        ("S has_any ('ü', 'ö')", "Ü Ö", False),
        ("S has_all ('Ü', 'ö')", "Ü ö", True),
        ("S =~ 'k'", "\u212a", False),  # KELVIN SIGN: Unicode folds it to k, ASCII folding doesn't
        ("S =~ 'i'", "İ", False),
    ],
)
def test_case_folding_is_ascii_only(predicate, value, expected):
    assert s_holds(predicate, value) is expected


def test_case_sensitive_operators_compare_ordinally():
    assert not s_holds("S == 'Å'", "A\u030a")  # no Unicode normalization
    assert s_holds("S has_cs 'ABC'", "x ABC y")
    assert not s_holds("S has_cs 'ABC'", "x abc y")


# ---------------------------------------------------------------------------------------------
# Null semantics (https://learn.microsoft.com/kusto/query/scalar-data-types/null-values,
# https://learn.microsoft.com/kusto/query/logical-operators)


def test_string_columns_are_never_null():
    assert holds("isempty(Signer)", Signer=None)
    assert holds("Signer == ''", Signer=None)
    assert holds("Signer !has 'x'", Signer=None)
    assert holds("Signer !in ('a')", Signer=None)
    assert holds("Signer !contains 'x'", Signer=None)
    assert not holds("Signer contains 'x'", Signer=None)
    assert holds("Signer matches regex '^$'", Signer=None)


def test_comparisons_with_null_are_null():
    for predicate in (
        "IsTrusted == true",
        "IsTrusted == false",
        "IsTrusted != true",
        "IsTrusted != false",
        "IsTrusted",
        "not(IsTrusted)",
        "not(IsTrusted == true)",
        "FileSize == 1",
        "FileSize != 1",
        "FileSize in (1, 2)",
        "FileSize !in (1, 2)",
    ):
        assert not holds(predicate, IsTrusted=None, FileSize=None), predicate


def test_and_or_treat_null_as_false():
    # logical-operators: "bool(null) and true" is false, "bool(null) or true" is true (the older
    # revision: "and/or treat the null value as equivalent to false").
    row = {"IsTrusted": None, "IsSigned": True}
    assert not holds("IsTrusted and IsSigned", **row)
    assert holds("not(IsTrusted and IsSigned)", **row)  # not(false)
    assert holds("IsTrusted or IsSigned", **row)
    assert not holds("IsTrusted or not(IsSigned)", **row)
    assert holds("not(IsTrusted or not(IsSigned))", **row)  # null or false -> false
    # The DWService rule: an unknown trust verdict does not vouch for the file.
    rule = "not(Signer in ('DWSNET OÜ', 'DWSNET srl') and IsTrusted == true)"
    assert holds(rule, Signer="DWSNET srl", IsTrusted=None)
    assert not holds(rule, Signer="DWSNET srl", IsTrusted=True)
    assert holds(rule, Signer="DWSNET srl", IsTrusted=False)
    assert holds(rule, Signer="DWSNET OU", IsTrusted=True)


def test_where_keeps_only_true():
    predicate = parse_predicate("IsTrusted")
    assert predicate.evaluate({"IsTrusted": True}.get) is True
    assert predicate.evaluate({"IsTrusted": False}.get) is False
    assert predicate.evaluate({"IsTrusted": None}.get) is False


def test_bool_and_integer_comparisons():
    assert holds("IsSigned == true", IsSigned=True)
    assert holds("IsSigned != true", IsSigned=False)
    assert not holds("IsSigned == false", IsSigned=True)
    assert holds("SignatureIndex == 0", SignatureIndex=0)
    assert holds("FileSize in (1, -2, 30)", FileSize=-2)
    assert holds("FileSize !in (1, -2, 30)", FileSize=3)
    assert holds("FileSize != -1", FileSize=1)


# ---------------------------------------------------------------------------------------------
# Evaluation order: cheapest first, short-circuit, each column read at most once


class Recorder:
    def __init__(self, **row):
        self.row, self.calls = row, []

    def __call__(self, name):
        self.calls.append(name)
        return self.row.get(name)


@pytest.mark.parametrize(
    "text",
    [
        "FileName =~ 'dwagent.exe' and IsTrusted == false",
        "IsTrusted == false and FileName =~ 'dwagent.exe'",
    ],
)
def test_and_reads_the_costly_column_only_when_needed(text):
    predicate = parse_predicate(text)
    miss = Recorder(FileName="notepad.exe", IsTrusted=False)
    assert not predicate.evaluate(miss)
    assert miss.calls == ["FileName"]
    hit = Recorder(FileName="DWAgent.exe", IsTrusted=False)
    assert predicate.evaluate(hit)
    assert hit.calls == ["FileName", "IsTrusted"]
    assert predicate.cost == 4 and predicate.columns == {"FileName", "IsTrusted"}


def test_or_stops_at_the_first_true_cheapest_first():
    predicate = parse_predicate("SHA256 == 'ab' or IsTrusted or Signer has 'x' or FileName == 'a'")
    get = Recorder(FileName="a", Signer="x", IsTrusted=True, SHA256="ab")
    assert predicate.evaluate(get)
    assert get.calls == ["FileName"]
    get = Recorder(FileName="b", Signer="y", IsTrusted=False, SHA256="ab")
    assert predicate.evaluate(get)
    assert get.calls == ["FileName", "Signer", "SHA256"]  # file 0, signature 1, hash 3


def test_nested_order_by_the_costliest_column_of_each_operand():
    text = "(IsTrusted or FileName == 'a') and (Signer has 'x' or FileName == 'b')"
    get = Recorder(FileName="c", Signer="y", IsTrusted=True)
    assert not parse_predicate(text).evaluate(get)
    assert get.calls == ["FileName", "Signer"]  # the cost-1 operand first, and it is false


def test_each_column_is_read_at_most_once():
    get = Recorder(Signer="c-value")
    text = "Signer has 'a' or Signer has 'b' or not(Signer contains 'c') and Signer != 'x'"
    assert not parse_predicate(text).evaluate(get)
    assert get.calls == ["Signer"]
    query = parse_query(
        "DeviceFileCertificateInfo | where Signer has 'nothing' | where Signer !has 'a'"
        " | where IsTrusted or Signer == 'other'"
    )
    get = Recorder(Signer="nothing", IsTrusted=True)
    assert query.matches(get)
    assert get.calls == ["Signer", "IsTrusted"]


def test_query_evaluates_the_cheapest_predicate_first_and_stops():
    query = parse_query(
        "DeviceFileCertificateInfo | where IsTrusted == false | where VersionInfoCompanyName"
        " has 'DWSNET' | where FileName endswith '.exe'"
    )
    assert [p.text for p in query.predicates] == [  # as written
        "IsTrusted == false",
        "VersionInfoCompanyName has 'DWSNET'",
        "FileName endswith '.exe'",
    ]
    get = Recorder(FileName="x.dll", VersionInfoCompanyName="DWSNET", IsTrusted=False)
    assert not query.matches(get)
    assert get.calls == ["FileName"]
    get = Recorder(FileName="x.exe", VersionInfoCompanyName="Other", IsTrusted=False)
    assert not query.matches(get)
    assert get.calls == ["FileName", "VersionInfoCompanyName"]


def test_cost_mapping_decides_the_order():
    predicate = parse_predicate("Signer has 'a' and FileName == 'b'", cost={"Signer": 0})
    get = Recorder(Signer="z", FileName="b")
    assert not predicate.evaluate(get)
    assert get.calls == ["Signer"]


# ---------------------------------------------------------------------------------------------
# Refusals: file, line, column and construct (the query starts on line 12 of its file).
# "KQL is case-sensitive for everything - table names, table column names, operators, functions,
# and so on" (https://learn.microsoft.com/kusto/query/): HAS, Has_Any, AND, True, signer, Not().

QUERY = """let Time_start = now(-5d);
let Time_end = now();
// a comment
DeviceFileCertificateInfo
| where Timestamp between (Time_start..Time_end)
| where Signer has 'DWSNET OÜ'
    and {clause}
| summarize Count=count() by DeviceId
"""
CLAUSE_LINE, CLAUSE_COLUMN = 12 + 6, 9  # "    and " is 8 characters


@pytest.mark.parametrize(
    ("clause", "offset", "construct", "message"),
    [
        ("Signer HAS 'x'", 7, "HAS", "unsupported operator"),
        ("Signer Has_Any ('x')", 7, "Has_Any", "unsupported operator"),
        ("Signer matches wildcard 'x'", 7, "matches wildcard", "unsupported operator"),
        ("Signer matches REGEX 'x'", 7, "matches REGEX", "unsupported operator"),
        ("Signer like 'x'", 7, "like", "unsupported operator"),
        ("Signer hasprefix 'x'", 7, "hasprefix", "unsupported operator"),
        ("Signer = 'x'", 7, "=", "unsupported operator"),
        ("FileSize > 5", 9, ">", "unsupported operator"),
        ("Signer between ('a' .. 'b')", 7, "between", "unsupported operator"),
        ("signer has 'x'", 0, "signer", "unknown column"),
        ("Signr has 'x'", 0, "Signr", "unknown column"),
        ("ReportId == 1", 0, "ReportId", "unknown column"),
        ("IsSigned has 'x'", 0, "IsSigned", "type mismatch"),
        ("FileSize in~ (1)", 0, "FileSize", "type mismatch"),
        ("Signer == true", 10, "true", "type mismatch"),
        ("IsTrusted == 'false'", 13, "'false'", "type mismatch"),
        ("IsTrusted == True", 13, "True", "type mismatch"),
        ("FileSize == 'x'", 12, "'x'", "type mismatch"),
        ("FileSize == 1.5", 12, "1.5", "type mismatch"),
        ("Signer in~ (1, 2)", 12, "1", "type mismatch"),
        ("Signer", 0, "Signer", "a string column is not a predicate"),
        ("CertificateExpirationTime == 5", 29, "5", "rules can only test it with isempty()"),
        ("tolower(Signer) has 'x'", 0, "tolower()", "unsupported function"),
        ("isnull(IsTrusted)", 0, "isnull()", "unsupported function"),
        ("Not(IsTrusted)", 0, "Not()", "unsupported function"),
        ("ago(1d) == 1", 0, "ago()", "unsupported function"),
        ("not IsTrusted", 0, "not", "not needs parentheses"),
        ("IsTrusted AND IsSigned", 10, "AND", "unsupported operator"),
        ("IsTrusted Or IsSigned", 10, "Or", "unsupported operator"),
        ("IsTrusted IsSigned", 10, "IsSigned", "unsupported operator"),
        ("true", 0, "true", "a literal is not a predicate"),
        ("'x' has Signer", 0, "'x'", "the left side of a comparison must be a column"),
        ("Signer has_any (dynamic(['a']))", 16, "dynamic", "dynamic arrays are not supported"),
        ("Signer has_any ()", 16, ")", "needs at least one value"),
        ("Signer has_any ('a',)", 20, ")", "expected a value"),
        ("Signer in 'a'", 10, "'a'", "needs a list in parentheses"),
        ("Signer has ''", 11, "''", "needs a letter or digit"),
        ("Signer has_all ('a', '--')", 21, "'--'", "needs a letter or digit"),
        ("Signer has 'a\\d'", 13, "\\d", "unsupported escape sequence"),
        ("Signer has 'a", 11, "'a", "string literal not closed on its line"),
        ("Signer matches regex '['", 21, "'['", "bad regular expression"),
        ("Signer matches regex @'\\d+'", 21, "\\d", "means different things in RE2 and Kusto"),
        ("Signer matches regex @'\\bx'", 21, "\\b", "means different things in RE2 and Kusto"),
        ("Signer matches regex @'[a-z&&[^x]]'", 21, "&&", "means different things"),
        ("Signer matches regex @'[x[^xyz]]'", 21, "[", "means different things"),
        ("Signer matches regex @'[0-9--4]'", 21, "--", "means different things"),
        ("Signer matches regex @'\\<x'", 21, "\\<", "means different things"),
        ("Signer matches regex '" + "(a)" * 17 + "'", 21, "'" + "(a)" * 17 + "'", "groups"),
        ("Timestamp > ago(1d) or IsSigned", 0, "Timestamp > ago(1d)", "only allowed in the time"),
        ("not(Timestamp > ago(1d))", 4, "Timestamp > ago(1d)", "only allowed in the time window"),
        ("Time_start == 1", 0, "Time_start", "a let name is only allowed in the time window"),
        ("(Signer has 'x' | where IsSigned", 16, "|", "expected ')'"),
        ("Signer has 'x' ;", 15, ";", "unexpected text after the predicate"),
        ("Signer has 'x' ||", 16, "||", "unsupported stage"),
        ("Sígner has 'x'", 0, "Sígner", "unknown column"),
    ],
)
def test_refusals_name_line_column_and_construct(clause, offset, construct, message):
    error = refusal(QUERY.format(clause=clause), source="rules/x.yaml", first_line=12)
    assert (error.source, error.line, error.column) == ("rules/x.yaml", CLAUSE_LINE, 9 + offset)
    assert error.construct == construct
    assert message in error.message
    assert str(error).startswith(f"rules/x.yaml:{CLAUSE_LINE}:{9 + offset}: {error.message}: ")


def test_refusal_hints_say_what_to_write():
    text = QUERY.format(clause="Signer HAS 'x'")
    assert "write 'has'" in str(refusal(text))
    error = refusal(QUERY.format(clause="Signr has 'x'"))
    assert error.hint.startswith("did you mean 'Signer' or")
    error = refusal(QUERY.format(clause="signerhash == 'x'"))
    assert "'SignerHash'" in error.hint
    error = refusal(QUERY.format(clause="Signer matches wildcard 'x'"))
    assert str(error).endswith(")") and "supported: has, !has" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "column", "construct", "message"),
    [
        (QUERY.replace("| where Signer", "| extend x = 1\n| where Signer"), 17, 3,
         "| extend", "unsupported stage"),
        (QUERY.replace("| where Signer", "| Where Signer"), 17, 3, "| Where", "unsupported stage"),
        (QUERY + "| project DeviceId\n", 20, 1, "| project", "stage after summarize"),
        (QUERY.replace("DeviceFileCertificateInfo", "DeviceEvents"), 15, 1, "DeviceEvents",
         "unsupported table"),
        (QUERY.replace("now(-5d)", "5"), 12, 18, "5", "expected a time bound"),
        (QUERY.replace("now(-5d)", "now(-5x)"), 12, 23, "5x", "expected a timespan"),
        (QUERY.replace("now(-5d)", "datetime(2024-02-30)"), 12, 27, "2024-02-30",
         "unsupported datetime literal"),
        (QUERY.replace("now(-5d);", "now(-5d)"), 13, 1, "let", "expected ';'"),
        (QUERY.replace("let Time_end", "let Time_start"), 13, 5, "Time_start",
         "let name already used"),
        (QUERY.replace("(Time_start..Time_end)", "(Time_start..End)"), 16, 40, "End",
         "unknown let name"),
        (QUERY.replace("Timestamp between", "Timestamp =="), 16, 9, "Timestamp ==",
         "unsupported comparison on Timestamp"),
        (QUERY.replace("Timestamp between", "Timestamp !between"), 16, 9, "Timestamp !between",
         "unsupported comparison on Timestamp"),
        (QUERY.replace("| summarize Count=count() by DeviceId", "| summarize"), 19, 3,
         "summarize", "summarize needs aggregations"),
        (QUERY.replace("| where Signer has 'DWSNET OÜ'\n    and {clause}", "| where"), 17, 3,
         "where", "where needs a predicate"),
        ("DeviceFileCertificateInfo\n| where Signer has ```a", 13, 20, "```",
         "multi-line string literal not closed"),
    ],
)  # fmt: skip
def test_query_structure_refusals(text, line, column, construct, message):
    error = refusal(text.replace("{clause}", "IsSigned"), source="r.yaml", first_line=12)
    assert (error.line, error.column, error.construct) == (line, column, construct)
    assert message in error.message


def test_predicate_refusals():
    error = refusal("Timestamp > ago(1d)", predicate=True, source="allow.yaml", first_line=4)
    assert (error.line, error.column, error.construct) == (4, 1, "Timestamp")
    assert "time window" in error.message
    assert refusal("   ", predicate=True).message == "empty predicate"
    error = refusal("Signer has 'a'\n| where IsSigned", predicate=True, first_line=7)
    assert (error.line, error.column, error.construct) == (8, 1, "|")


def test_kql_error_is_a_value_error_that_pickles():
    error = refusal(QUERY.format(clause="Signer HAS 'x'"), source="rules/x.yaml", first_line=12)
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.construct == "HAS" and copy.line == CLAUSE_LINE


# ---------------------------------------------------------------------------------------------
# Query shape: let, time window, summarize are ignored and recorded; literals


def test_query_shape_and_ignored():
    query = parse_query(QUERY.format(clause="IsSigned"), source="r.yaml", first_line=12)
    assert isinstance(query, Query) and query.table == "DeviceFileCertificateInfo"
    assert query.ignored == (
        "let Time_start = now(-5d)",
        "let Time_end = now()",
        "time window: Timestamp between (Time_start..Time_end)",
        "summarize Count=count() by DeviceId",
    )
    (predicate,) = query.predicates
    assert isinstance(predicate, Predicate)
    assert predicate.text == "Signer has 'DWSNET OÜ'\n    and IsSigned"
    assert query.columns == predicate.columns == {"Signer", "IsSigned"}
    assert query.matches({"Signer": "DWSNET OÜ", "IsSigned": True}.get)
    assert not query.matches({"Signer": "DWSNET OÜ", "IsSigned": False}.get)


@pytest.mark.parametrize(
    "window",
    [
        "Timestamp between (ago(5d) .. now())",
        "Timestamp > ago(1h)",
        "Timestamp >= ago(30m)",
        "Timestamp < now()",
        "Timestamp <= now(+1d)",
        "Timestamp >= datetime(2024-01-31)",
        "Timestamp < datetime(2024-01-31T12:00:00Z)",
        "Timestamp < datetime(2024-01-31 12:00:00.1234567)",
        "Timestamp > ago(10s) and Timestamp < now()",
    ],
)
def test_time_windows(window):
    query = parse_query(f"RmmScanFileCertificateInfo_CL\n| where {window} and Signer has 'x'")
    assert query.table == "RmmScanFileCertificateInfo_CL"
    assert [p.text for p in query.predicates] == ["Signer has 'x'"]
    assert all(item.startswith("time window: Timestamp ") for item in query.ignored)
    assert len(query.ignored) == window.count("Timestamp")


def test_a_time_window_alone_adds_no_predicate():
    query = parse_query("DeviceFileCertificateInfo | where Timestamp > ago(1d)")
    assert query.predicates == () and query.columns == frozenset()
    assert query.matches({}.get)


def test_split_predicate_text_when_the_window_is_in_the_middle():
    query = parse_query(
        "DeviceFileCertificateInfo | where Signer has 'a' and Timestamp > ago(1d) and IsSigned"
    )
    assert [p.text for p in query.predicates] == ["Signer has 'a' and IsSigned"]


def test_summarize_content_is_not_parsed_as_predicates():
    query = parse_query(
        "DeviceFileCertificateInfo | where Signer has 'a'\n| summarize make_set(x, 'a|b'),"
        " c=countif(y > 1) by bin(Timestamp, 1d) // trailing"
    )
    assert query.ignored == (
        "summarize make_set(x, 'a|b'), c=countif(y > 1) by bin(Timestamp, 1d)",
    )


def test_string_literals():
    # https://learn.microsoft.com/kusto/query/scalar-data-types/string
    assert s_holds(r"S == 'it\'s'", "it's")
    assert s_holds(r'S == "say \"hi\""', 'say "hi"')
    assert s_holds(r"S == 'a\\b'", "a\\b")
    assert s_holds(r"S == 'tab\there'", "tab\there")
    assert s_holds(r"S == 'a\nb'", "a\nb")
    assert s_holds("S == @'C:\\Folder\\filename.txt'", "C:\\Folder\\filename.txt")
    assert s_holds("S == @'it''s'", "it's")
    assert s_holds('S == @"say ""hi"""', 'say "hi"')
    assert s_holds('S == "string with \' (single quotes)"', "string with ' (single quotes)")
    assert s_holds("S == 'Hello' ', ' @\"world!\"", "Hello, world!")  # splicing
    assert s_holds("S == 'Hello'\n  // Comment\n  ', '@\"world!\"", "Hello, world!")
    assert s_holds("S == h'secret'", "secret")
    assert s_holds("S == ```two\nlines```", "two\nlines")
    assert s_holds("S has ('x')", "a x b")
    # The page's escaped regex example: '\\n.*(>|\'|=|\")[a-zA-Z0-9/+]{86}=='
    text = r"S matches regex '\\n.*(>|\'|=|\")[a-zA-Z0-9/+]{86}=='"
    assert s_holds(text, "\nx>" + "a" * 86 + "==")  # \n in the regex: a line break
    assert not s_holds(text, "\\nx>" + "a" * 86 + "==")


def test_multi_line_lists_with_comments_and_trailing_whitespace():
    text = (
        "DeviceFileCertificateInfo\r\n| where Signer  has_any (\r\n        'ConnectWise', \r\n"
        "        // the old name\r\n        'CONTINUUM MANAGED', \t\r\n        'ScreenConnect'\r\n"
        "    )\r\n"
    )
    (predicate,) = parse_query(text).predicates
    assert predicate.evaluate({"Signer": "Continuum Managed Services"}.get)
    assert not predicate.evaluate({"Signer": "ConnectWiseControl"}.get)


def test_regex_is_re2_search():
    assert s_holds("S matches regex '^a+$'", "aaa")
    assert not s_holds("S matches regex '^a+$'", "aab")
    assert s_holds("S matches regex '(?i)dwsnet o[uü]'", "DWSNET OÜ")  # RE2 folds Unicode
    assert s_holds("S matches regex 'Ü'", "xÜy")
    assert s_holds("S matches regex @'[[:digit:]]{3}'", "a123")
    assert s_holds("S matches regex @'\\p{Lu}\\p{Ll}'", "Éa")
    assert s_holds("S matches regex '(a|b)+c'", "x" * 10000 + "ababc")  # linear time


# ---------------------------------------------------------------------------------------------
# The upstream rule pack: every query parses, and matches the signer it names


def query_block(path: Path) -> tuple[str, int]:
    """The `query: |` block of a Sentinel YAML file (CRLF, and not valid YAML), and its line."""
    lines = path.read_text("utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip() == "query: |")
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        body.append(line)
    indent = min(len(line) - len(line.lstrip()) for line in body if line.strip())
    return "\n".join(line[indent:] for line in body), start + 2


UPSTREAM_FILES = sorted(UPSTREAM.glob("rmm_*.yaml"))


def test_the_upstream_pack_is_there():
    assert len(UPSTREAM_FILES) == 52, UPSTREAM


@pytest.mark.parametrize("path", UPSTREAM_FILES, ids=lambda p: p.stem)
def test_upstream_queries_parse_and_match(path):
    text, first_line = query_block(path)
    query = parse_query(text, source=str(path), first_line=first_line)
    assert query.table == "DeviceFileCertificateInfo"
    assert query.columns == {"Signer"}
    assert query.ignored[:3] == (
        "let Time_start = now(-5d)",
        "let Time_end = now()",
        "time window: Timestamp between (Time_start..Time_end)",
    )
    assert query.ignored[3].startswith("summarize FirstSeen=min(Timestamp)")
    (predicate,) = query.predicates
    needles = predicate.text.split("'")[1::2]
    assert needles and all(needles)
    for needle in needles:
        shouting = "".join(c.upper() if c.isascii() else c for c in needle)
        assert query.matches({"Signer": needle}.get), needle
        assert query.matches({"Signer": f"{shouting} (signed)"}.get), needle
        assert not query.matches({"Signer": f"X{needle}"}.get), needle
    assert not query.matches({"Signer": "Microsoft Corporation"}.get)
    assert not query.matches({"Signer": None}.get)


def test_upstream_errors_name_the_file_line():
    path = UPSTREAM / "rmm_DWService_filesig.yaml"
    text, first_line = query_block(path)
    error = refusal(text.replace("has", "HAS"), source=str(path), first_line=first_line)
    raw = path.read_text("utf-8").splitlines()
    assert (error.line, error.column, error.construct) == (18, 16, "HAS")
    # The column counts within the query text, which YAML's block scalar dedents by two.
    assert raw[error.line - 1][2 + error.column - 1 :].startswith("has 'DWSNET")


# ---------------------------------------------------------------------------------------------
# has against a brute-force definition: split both sides into terms (maximal runs of letters
# and decimal digits) and single separator characters; fold ASCII letters (unless _cs); the
# needle's sequence must occur in the value's sequence.


def bf_is_term(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category.startswith("L") or category == "Nd"


def bf_tokens(value: str) -> list[str]:
    tokens, run = [], ""
    for ch in value:
        if bf_is_term(ch):
            run += ch
        else:
            if run:
                tokens.append(run)
                run = ""
            tokens.append(ch)
    if run:
        tokens.append(run)
    return tokens


def bf_fold(value: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in value)


def bf_has(value: str, needle: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        value, needle = bf_fold(value), bf_fold(needle)
    hay, pin = bf_tokens(value), bf_tokens(needle)
    return any(hay[i : i + len(pin)] == pin for i in range(len(hay) - len(pin) + 1))


ALPHABET = list("aAbBkKzZ09 .,-_'\"\t") + list("ÜüéÉßİıÅ中٣²\u212a\u0308\u00a0")
TEXT = st.text(st.sampled_from(ALPHABET), max_size=24)


def verbatim(value: str) -> str:
    return "@'" + value.replace("'", "''") + "'"


def flip_ascii_case(value: str, flips: list[bool]) -> str:
    return "".join(
        c.swapcase() if c.isascii() and flip else c for c, flip in zip(value, flips, strict=False)
    )


@settings(max_examples=1500, deadline=None)
@given(value=TEXT, data=st.data())
def test_has_agrees_with_brute_force(value, data):
    if value and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        j = data.draw(st.integers(i + 1, len(value)))
        needle = value[i:j]
        flips = data.draw(st.lists(st.booleans(), min_size=len(needle), max_size=len(needle)))
        needle = flip_ascii_case(needle, flips)
    else:
        needle = data.draw(TEXT)
    assume(any(bf_is_term(c) for c in needle))
    columns = {"S": "string"}
    for op, case_sensitive, negated in (
        ("has", False, False),
        ("has_cs", True, False),
        ("!has", False, True),
        ("!has_cs", True, True),
    ):
        predicate = parse_predicate(f"S {op} {verbatim(needle)}", columns=columns)
        expected = bf_has(value, needle, case_sensitive) is not negated
        assert predicate.evaluate({"S": value}.get) is expected, (op, value, needle)
    any_of = parse_predicate(f"S has_any ({verbatim(needle)}, 'zzz9')", columns=columns)
    assert any_of.evaluate({"S": value}.get) is (
        bf_has(value, needle, False) or bf_has(value, "zzz9", False)
    )


@settings(max_examples=500, deadline=None)
@given(value=TEXT, other=TEXT)
def test_case_insensitive_equality_agrees_with_ascii_folding(value, other):
    columns = {"S": "string"}
    same = bf_fold(value) == bf_fold(other)
    assert (
        parse_predicate(f"S =~ {verbatim(other)}", columns=columns).evaluate({"S": value}.get)
        is same
    )
    assert (
        parse_predicate(f"S in~ ({verbatim(other)})", columns=columns).evaluate({"S": value}.get)
        is same
    )
    assert parse_predicate(f"S contains {verbatim(other)}", columns=columns).evaluate(
        {"S": value}.get
    ) is (bf_fold(other) in bf_fold(value))


def test_tables_are_the_two_documented():
    assert TABLES == ("DeviceFileCertificateInfo", "RmmScanFileCertificateInfo_CL")
