"""The Sentinel package (packaging/sentinel/) is what its generator makes of columns.py now,
and the table and the rule's stream carry every column, typed as the Kusto type says, with
TimeGenerated and without a name Log Analytics reserves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rmmscan.rows.columns import COLUMNS
from rmmscan.sinks.transports.logs_ingestion import RESERVED, LogsIngestionSettings

from conftest import ROOT

PACKAGE = ROOT / "packaging" / "sentinel"
TABLE_TYPES = {"string": "string", "bool": "boolean", "long": "long", "int": "int",
               "datetime": "dateTime"}  # fmt: skip
STREAM_TYPES = {"string": "string", "bool": "boolean", "long": "long", "int": "int",
                "datetime": "datetime"}  # fmt: skip


def _template(name: str) -> dict:
    return json.loads((PACKAGE / name).read_text("utf-8"))


def test_the_committed_files_are_the_generators():
    run = subprocess.run([sys.executable, str(PACKAGE / "generate.py"), "--check"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_check_fails_and_shows_the_difference_when_stale(tmp_path):
    for name in ("generate.py", "table.json", "dcr.json"):
        (tmp_path / name).write_text((PACKAGE / name).read_text("utf-8"), "utf-8")
    stale = (tmp_path / "dcr.json").read_text("utf-8").replace('"VerificationStatus"',
                                                               '"VerifyStatus"')  # fmt: skip
    (tmp_path / "dcr.json").write_text(stale, "utf-8")
    run = subprocess.run([sys.executable, str(tmp_path / "generate.py"), "--check"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert any(x.startswith("-") and '"name": "VerifyStatus"' in x for x in lines)
    assert any(x.startswith("+") and '"name": "VerificationStatus"' in x for x in lines)
    assert (tmp_path / "dcr.json").read_text("utf-8") == stale  # --check writes nothing


def _table_columns() -> dict[str, str]:
    (resource,) = _template("table.json")["resources"]
    schema = resource["properties"]["schema"]
    assert schema["name"] == "RmmScanFileCertificateInfo_CL"
    return {c["name"]: c["type"] for c in schema["columns"]}


def _stream_and_flow() -> tuple[str, dict[str, str], dict]:
    (resource,) = _template("dcr.json")["resources"]
    assert resource["type"] == "Microsoft.Insights/dataCollectionRules"
    properties = resource["properties"]
    ((stream, declaration),) = properties["streamDeclarations"].items()
    (flow,) = properties["dataFlows"]
    return stream, {c["name"]: c["type"] for c in declaration["columns"]}, flow


@pytest.mark.parametrize(("columns", "types"), [
    (_table_columns, TABLE_TYPES), (lambda: _stream_and_flow()[1], STREAM_TYPES),
])  # fmt: skip
def test_every_column_is_there_typed_right(columns, types):
    declared = columns()
    assert list(declared) == ["TimeGenerated", *(c.name for c in COLUMNS)]
    assert declared["TimeGenerated"] in ("dateTime", "datetime")
    for column in COLUMNS:
        assert declared[column.name] == types[column.type], column.name
    assert not RESERVED & declared.keys()
    assert {"TenantId", "Type"} <= RESERVED


def test_the_rule_feeds_the_table_from_the_transports_stream():
    stream, _, flow = _stream_and_flow()
    assert stream == LogsIngestionSettings("https://x", "dcr-x").stream
    assert flow["streams"] == [stream] and flow["outputStream"] == stream
    assert stream == "Custom-" + "RmmScanFileCertificateInfo_CL"
    assert flow["transformKql"] == "source"
    outputs = _template("dcr.json")["outputs"]
    assert "immutableId" in outputs["rule_id"]["value"]
    assert "logsIngestion" in outputs["endpoint"]["value"]
