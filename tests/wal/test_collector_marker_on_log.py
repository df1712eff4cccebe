"""A collector's applied marker on a format-2 store: its directory goes only once the log holds none of its records.

``remove_marker`` folds first (``settle``), then removes the directory. A
settle can give up (the fold lock stayed busy past the lock timeout: another
process folding a long backlog, as 8 closing collectors did in issue 13's
probe); removing the directory anyway made that other process's fold fail on
it ("could not open lock file ...: its directory is gone").
"""

from __future__ import annotations

import os

import filemem
from filemem._collector._applied import RangeSet, marker_dir, marker_namespace, marker_op, read_marker, remove_marker

JID = "j1-test"


def test_the_marker_directory_stays_while_its_records_are_only_in_the_log(store_path: str) -> None:
    with filemem.Store(store_path) as s:
        engine = s._engine
        engine.apply([marker_op(JID, RangeSet([[1, 10]]))])
        engine.settle()
        path = marker_dir(engine, JID)
        assert os.path.isdir(path)
        engine.apply([marker_op(JID, RangeSet([[1, 20]]))])  # in the log, not folded yet
        real_settle = engine.settle
        engine.settle = lambda: None  # type: ignore[method-assign]  # the fold lock stayed busy
        try:
            remove_marker(engine, JID)
        finally:
            engine.settle = real_settle  # type: ignore[method-assign]
        assert os.path.isdir(path), "removed while its records were only in the log"
        assert engine.unfolded(marker_namespace(JID))
        engine.settle()  # the fold that would have failed on a missing directory
        assert read_marker(engine, JID)[0].ranges == [[1, 20]]
        remove_marker(engine, JID)  # now folded: it goes
        assert not os.path.exists(path)
