"""The durable spool: any sequence of appends, acknowledgements, torn tails and reopenings keeps the order and
loses nothing appended; acknowledging costs the same whatever the backlog."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from monitor.errors import UserError
from monitor.record.spool import Spool
from support.examples import examples

TORN = st.one_of(  # what a crash in the middle of an append leaves: never a newline
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b),
    st.builds(lambda n: json.dumps({"n": n}).encode(), st.integers()),  # a whole record but for its newline
    st.binary(min_size=1, max_size=40).map(lambda b: b"\0" * len(b)),  # blocks allocated, never written
)


class SpoolMachine(RuleBasedStateMachine):
    """The model: the records appended and not yet acknowledged, in order."""

    def __init__(self):
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-"))
        self.spool = self._open()
        self.model: list[dict] = []
        self.number = 0

    def _open(self) -> Spool:
        return Spool(self.directory / "events.jsonl", segment_bytes=96)  # small: segments roll over often

    @rule(count=st.integers(1, 4), pad=st.text(max_size=30))
    def append(self, count: int, pad: str):
        for _ in range(count):
            record = {"n": self.number, "pad": pad}
            self.spool.append(record)
            self.model.append(record)
            self.number += 1

    @rule(data=st.data())
    def drain(self, data):
        entries = self.spool.read(data.draw(st.integers(1, 8)))
        assert [e.record for e in entries] == self.model[:len(entries)], "in order, from the oldest not acknowledged"
        assert len(entries) == min(len(self.model), len(entries))
        if entries:
            written = data.draw(st.integers(1, len(entries)))
            self.spool.ack(entries[written - 1])
            del self.model[:written]

    @rule(torn=TORN)
    def crash_in_the_middle_of_an_append(self, torn: bytes):
        self.spool.close()  # the process dies: what it wrote stays, as the kernel had it
        last = max(self.directory.glob("events.*.jsonl"))
        with open(last, "ab") as f:
            f.write(torn)
        self.spool = self._open()

    @rule()
    def restart(self):
        self.spool.close()
        self.spool = self._open()

    @invariant()
    def nothing_appended_is_lost(self):
        assert len(self.spool) == len(self.model)

    def teardown(self):
        self.spool.close()
        assert [e.record for e in self._open_and_read()] == self.model
        shutil.rmtree(self.directory)

    def _open_and_read(self):
        spool = self._open()
        try:
            return spool.read(len(self.model) + 10)
        finally:
            spool.close()


TestSpoolProperties = SpoolMachine.TestCase
TestSpoolProperties.settings = settings(max_examples=examples(40), stateful_step_count=25, deadline=None)


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "events.jsonl")
    yield s
    s.close()


def test_acknowledging_does_not_rewrite_the_spool(spool, tmp_path):
    for n in range(500):
        spool.append({"n": n})
    (segment,) = tmp_path.glob("events.*.jsonl")
    before = segment.stat()
    for _ in range(5):
        spool.ack(spool.read(50)[-1])
    after = segment.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns), \
        "an acknowledgement writes only the position"
    assert len(spool) == 250 and spool.read(1)[0].record == {"n": 250}


def test_written_segments_are_deleted_and_a_lagging_position_replays_never_skips(tmp_path):
    spool = Spool(tmp_path / "events.jsonl", segment_bytes=200)
    for n in range(100):
        spool.append({"n": n})
    assert len(list(tmp_path.glob("events.*.jsonl"))) > 3
    entries = spool.read(60)
    spool.ack(entries[29])
    position = (tmp_path / "events.acked").read_bytes()
    spool.ack(entries[59])
    assert len(list(tmp_path.glob("events.*.jsonl"))) < 5, "segments written to the database are deleted"
    spool.close()
    (tmp_path / "events.acked").write_bytes(position)  # a power cut lost the last position write
    again = Spool(tmp_path / "events.jsonl", segment_bytes=200)
    replayed = [e.record["n"] for e in again.read(1000)]
    assert replayed[-40:] == list(range(60, 100)) and replayed[0] <= 60, "written again (harmless), never skipped"
    again.close()


def test_a_spool_of_the_previous_version_is_replayed_whole(tmp_path):
    old = tmp_path / "events.jsonl"  # one file of JSON lines, its last line torn by a crash
    old.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(5)) + '{"n": 5, "to')
    spool = Spool(old)
    spool.append({"n": 6})
    assert [e.record for e in spool.read(100)] == [{"n": n} for n in (0, 1, 2, 3, 4, 6)]
    assert not old.exists() and len(spool) == 6
    spool.close()


def test_one_process_per_spool(spool, tmp_path):
    with pytest.raises(UserError, match="in use by another har-monitor process"):
        Spool(tmp_path / "events.jsonl")


def test_a_corrupt_line_is_skipped_not_a_stop(tmp_path):
    spool = Spool(tmp_path / "events.jsonl")
    for n in range(3):
        spool.append({"n": n})
    spool.close()
    (segment,) = tmp_path.glob("events.*.jsonl")
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(lines[0] + b"\x00garbage\n" + lines[2])  # the disk corrupted the middle record
    again = Spool(tmp_path / "events.jsonl")
    entries = again.read(10)
    assert [e.record for e in entries] == [{"n": 0}, None, {"n": 2}], "the records after it are still delivered"
    again.ack(entries[-1])
    assert len(again) == 0
    again.close()
