"""Property tests where the suite had none: the dataset reader and log/error redaction.

(The GraphQL escaping and the config loader already have hypothesis tests in
tests/integration/test_runpod_api.py and tests/unit/test_config_properties.py.)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainpod.redact import REDACTED, redact_text
from trainpod_trainer.data import DataError, SplitStats, read_jsonl

pytestmark = pytest.mark.chaos

_record = st.fixed_dictionaries({"instruction": st.text(max_size=20), "output": st.text(max_size=20)},
                                optional={"input": st.text(max_size=10), "extra": st.integers()})
_line = st.one_of(
    _record.map(lambda r: json.dumps(r).encode()),
    _record.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8")),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.text(max_size=30).map(lambda t: t.replace("\n", " ").encode("latin-1", "replace")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_line, max_size=8), bom=st.booleans(), skip=st.booleans())
def test_any_bytes_give_records_or_a_data_error_naming_the_file(lines, bom, skip):
    """Whatever bytes a jsonl holds: parsed records, or a DataError naming the file (and line) —
    never another exception (a crash with a traceback in the trainer)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines))
        try:
            records = read_jsonl(path, "instruction", "skip" if skip else "error", SplitStats(str(path)))
        except DataError as exc:
            assert str(path) in str(exc)
            return
        assert records and all(isinstance(r.get("instruction"), str) for r in records)


_secret = st.text(st.characters(blacklist_categories=("Cs",)), min_size=8, max_size=40).filter(
    lambda s: s.strip() == s and REDACTED not in s)


@settings(max_examples=200, deadline=None)
@given(secret=_secret, before=st.text(max_size=40), after=st.text(max_size=40), times=st.integers(1, 3))
def test_a_secret_anywhere_in_a_message_is_redacted(secret, before, after, times):
    text = before + (secret + after) * times
    assert secret not in redact_text(text, {secret})
