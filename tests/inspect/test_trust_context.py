"""The trust context's two shortcuts give what signify's own code gives: the CTL index by
raw identifier finds the same subject as signify's index for every entry of the real
authroot.stl, and saved root names give the same index as normalizing them afresh; a saved
file that is damaged, too large, of another format or normalized by another asn1crypto is
ignored."""

from __future__ import annotations

import json

from rmmscan.inspect import _signify as sg
from rmmscan.inspect import trust

from conftest import TEST_ROOT


def test_ctl_index_by_raw_identifier_agrees_with_signify():
    ctl = sg.TRUSTED_CERTIFICATE_STORE_WITH_CTL.ctl
    expected = ctl._subjects
    assert len(expected) > 400
    index = trust.IndexedTrustList(ctl)
    for key, subject in expected.items():
        assert index._subject(key) is not None
        assert index._subject(key).identifier == subject.identifier
    assert index._by_id is None, "no lookup missed, so signify's index was never built"
    assert index._subject("00" * 32) is None  # a miss: signify's own index decides
    assert index._by_id is not None


def _index(store: trust.TrustStore) -> dict[str, list[str]]:
    return {
        key: sorted(cert.sha1_fingerprint for cert, _ in entries)
        for key, entries in store.by_subject.items()
    }


def test_saved_names_give_the_same_index(tmp_path):
    names = tmp_path / "trust-names.json"
    sg.NAME_MEMO.clear()
    fresh = _index(trust.build([TEST_ROOT]))
    sg.NAME_MEMO.clear()
    built = trust.build([TEST_ROOT], names_file=names)
    first = _index(built)
    saved = json.loads(names.read_text())
    assert len(saved["names"]) == len(fresh) > 500
    assert built.learnt == len(saved["roots"]) > 500
    sg.NAME_MEMO.clear()
    rebuilt = trust.build([TEST_ROOT], names_file=names)
    assert rebuilt.learnt == 0, "every root indexed from its thumbprint: no subject parsed"
    again = _index(rebuilt)
    assert fresh == first == again


def test_a_damaged_names_file_is_ignored(tmp_path):
    names = tmp_path / "trust-names.json"
    sg.NAME_MEMO.clear()
    fresh = _index(trust.build([TEST_ROOT]))
    trust.build([TEST_ROOT], names_file=names)
    good = json.loads(names.read_text())
    other = dict(good, normalizer="asn1crypto 0.0.1")  # another normalizer: not trusted
    assert trust.load_saved(names)[0]
    for text in ("{not json", '{"format": 2, "names": {}}', '{"format": 2, "names": {"zz": "x"}}',
                 '{"format": 1, "names": []}', "[]", "", json.dumps(other),
                 " " * (trust._NAMES_MAX + 1)):  # fmt: skip
        names.write_text(text)
        assert trust.load_saved(names)[0] == {}
        sg.NAME_MEMO.clear()
        assert _index(trust.build([TEST_ROOT], names_file=names)) == fresh
        assert trust.load_saved(names)[0], "rewritten whole"


def test_a_sweep_saves_the_names_and_the_next_one_uses_them(tmp_path):
    from sweeptree import PE_DIR, scan, stable_set

    state = tmp_path / "state"
    args = ("--format", "jsonl", "--emit", "all", "--no-cache", "-j", "1", PE_DIR)
    first = scan(*args, state_dir=state, system_roots=True)
    saved = state / "trust-names.json"
    assert saved.is_file() and len(trust.load_saved(saved)[0]) > 500
    stamp = saved.stat().st_mtime_ns
    again = scan(*args, state_dir=state, system_roots=True)
    assert first.returncode == again.returncode == 1
    assert stable_set(first.rows) == stable_set(again.rows)
    assert saved.stat().st_mtime_ns == stamp, "nothing new to save"
