"""A bounded schemathesis run against the real server (see fuzz.py and
docs/fuzzing.md for the longer recorded runs).

Fails on any 5xx answer, and on any answer whose status, media type,
headers or body the spec does not document. Its own server, so the junk it
creates meets no other test.
"""

from __future__ import annotations

import os
import re

import pytest

import fuzz

# Seconds of fuzzing; TERN_FUZZ_SECONDS overrides (e.g. 600 for a long run).
MAX_TIME = int(os.environ.get("TERN_FUZZ_SECONDS", "75"))


def _failures(output: str) -> str:
    m = re.search(r"=+ FAILURES =+\n(.*?)(\n=+ SUMMARY =+)", output, re.S)
    return (m.group(1) if m else output)[-12000:]


def test_schemathesis_finds_no_server_errors_or_schema_violations(tern_factory, tmp_path):
    server = tern_factory()
    seed = os.environ.get("TERN_FUZZ_SEED")
    result = fuzz.run(server.base_url, max_time=MAX_TIME, report_dir=tmp_path / "schemathesis",
                      seed=int(seed) if seed else None)
    assert server.alive(), "the server died during fuzzing\n" + server.log_tail()
    summary = result.output[result.output.find("SUMMARY"):][:3000]
    print(summary)
    if result.returncode != 0:
        pytest.fail(f"schemathesis found problems (reports in {result.report_dir}):\n"
                    f"{_failures(result.output)}\n{summary}", pytrace=False)
