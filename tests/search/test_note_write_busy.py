"""The fold thread's index upkeep never waits for a search in another thread (a lock-order deadlock).

A search holds the searcher's lock while its listing may wait for the fold
lock; the fold thread, holding the fold lock, calls ``note_write`` from its
install. Waiting there deadlocked the two until the lock timeout (a search
raised LockTimeout in CI, 2026-12-04).
"""

from __future__ import annotations

import threading

import filemem


def test_note_write_skips_while_another_thread_holds_the_searcher(store_path: str) -> None:
    with filemem.Store(store_path) as store:
        store.put(("docs",), "a", {"text": "hello"})
        assert store.search(None, "hello")  # the namespace has an index now
        searcher = store._searcher
        held, release = threading.Event(), threading.Event()

        def search_in_progress() -> None:
            with searcher._lock:
                held.set()
                release.wait(30)

        t = threading.Thread(target=search_in_progress)
        t.start()
        try:
            assert held.wait(10)
            done = threading.Event()

            def write_and_fold() -> None:
                # A put calls note_write after its commit (format 1), the fold from its install (format 2).
                store.put(("docs",), "b", {"text": "world"})
                store._backend.engine.settle()
                done.set()

            writer = threading.Thread(target=write_and_fold)
            writer.start()
            assert done.wait(5), "a write or its fold waited for a search running in another thread"
            writer.join(5)
        finally:
            release.set()
            t.join(10)
        assert store.search(None, "world")  # the search catches up what was skipped
