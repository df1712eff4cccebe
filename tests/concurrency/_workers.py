"""Child-process entry points and parent-side helpers for the real-process tests.

Every function named ``*_child`` runs in a process started with the *spawn*
context, so it must be importable (module level) and take picklable
arguments. Children report through plain files, never through pipes or
queues: a child may be SIGKILLed at any instruction, and a file line written
with one ``os.write`` is either there whole or not at all.

* ack files: one JSON list per line, appended with ``O_APPEND`` and written
  only *after* the store call returned (an ack is a promise the parent will
  check);
* result files: one JSON object, written by rename at the end of a child;
* ready files: created once the child has opened its store (so recovery has
  run) and is about to start working.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

import filemem
from filemem import ConflictError, Store

PAD = "p" * 96  # makes records big enough that a small shard_max_bytes splits often

# ---------------------------------------------------------------- file plumbing


def open_ack(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def ack(fd: int, *fields: Any) -> None:
    """Append one acknowledgement line with a single write (all or nothing)."""
    os.write(fd, (json.dumps(list(fields)) + "\n").encode())


def read_acks(path: str) -> list[list[Any]]:
    """Every complete ack line of ``path`` (a torn last line is no promise)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.split(b"\n")[:-1]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def write_result(path: str, obj: Any) -> None:
    tmp = path + ".part"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def read_result(path: str) -> Any:
    with open(path) as fh:
        return json.load(fh)


def touch(path: str) -> None:
    with open(path, "w"):
        pass


def die() -> None:
    """Crash exactly here, like a power cut of the process: no cleanup, no finally."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # pragma: no cover - never reached


def ns_str(ns: tuple[str, ...]) -> str:
    return "/".join(ns)


# ---------------------------------------------------------------- update functions (run under the lock)


def incr(v: Any) -> int:
    return (v or 0) + 1


def incr_padded(v: Any) -> dict[str, Any]:
    return {"n": (v["n"] if v else 0) + 1, "pad": PAD}


def adder(delta: int) -> Callable[[Any], int]:
    def add(v: Any) -> int:
        return int(v) + delta

    return add


# ---------------------------------------------------------------- 1. counters


def incr_child(
    path: str,
    opts: dict[str, Any],
    keys: list[list[Any]],
    m: int,
    padded: bool,
    seed: int,
    result_path: str,
    barrier: Any,
) -> None:
    """``m`` updates of keys drawn from ``keys`` ([namespace, key] pairs); count each."""
    store = Store(path, **opts)
    rng = random.Random(seed)
    fn = incr_padded if padded else incr
    counts: dict[str, int] = {}
    barrier.wait(60)
    for _ in range(m):
        ns, key = rng.choice(keys)
        store.update(tuple(ns), key, fn)
        counts[f"{ns_str(tuple(ns))}|{key}"] = counts.get(f"{ns_str(tuple(ns))}|{key}", 0) + 1
    write_result(result_path, {"counts": counts, "stats": store.stats()})
    store.close()


def batch_incr_child(
    path: str, opts: dict[str, Any], pairs: list[list[Any]], m: int, result_path: str, barrier: Any
) -> None:
    """``m`` batches, each incrementing every [namespace, key] of ``pairs`` at once."""
    store = Store(path, **opts)
    barrier.wait(60)
    for _ in range(m):
        with store.batch() as b:
            for ns, key in pairs:
                b.update(tuple(ns), key, incr)
    write_result(result_path, {"stats": store.stats()})
    store.close()


# ---------------------------------------------------------------- 5. optimistic concurrency


#: cas_child's first rounds run in lockstep: every process reads the same key,
#: waits for all the others to have read it, then writes (see cas_child).
CAS_LOCKSTEP_ROUNDS = 10


def cas_child(
    path: str, opts: dict[str, Any], ns: str, keys: list[str], m: int, seed: int, result_path: str, barrier: Any
) -> None:
    """``m`` compare-and-set increments (read, compute, put if_version, retry on conflict).

    The first :data:`CAS_LOCKSTEP_ROUNDS` (at most ``m``) hold the race open
    on purpose: all processes read the round's key, meet at ``barrier``, and
    only then put, so each read the same version and at most one first put
    per round can succeed: ``lockstep_conflicts`` is at least (processes - 1)
    per round, on a quiet machine or a loaded one (where processes scheduled
    one after another might never overlap by chance). A second barrier ends
    the round once every process has landed its increment. The rest run
    free, on random keys.
    """
    store = Store(path, **opts)
    rng = random.Random(seed)
    conflicts = 0
    lockstep_conflicts = 0
    counts: dict[str, int] = {}
    barrier.wait(60)

    def increment(key: str, item: Any) -> int:
        """Put ``item``'s value + 1 if its version still holds, re-reading after each conflict; the conflicts."""
        seen = 0
        while True:
            current, version = (item.value, item.version) if item is not None else (0, 0)
            try:
                store.put(ns, key, current + 1, if_version=version)
                return seen
            except ConflictError as exc:
                assert exc.current_version != version
                seen += 1
            item = store.get_item(ns, key)

    rounds = min(CAS_LOCKSTEP_ROUNDS, m)
    for r in range(rounds):
        key = keys[r % len(keys)]
        item = store.get_item(ns, key)
        barrier.wait(60)  # every process has read this round's version: now all write
        got = increment(key, item)
        lockstep_conflicts += 1 if got else 0
        conflicts += got
        counts[key] = counts.get(key, 0) + 1
        barrier.wait(60)  # every increment of the round landed: the next round reads after them
    for _ in range(m - rounds):
        key = rng.choice(keys)
        conflicts += increment(key, store.get_item(ns, key))
        counts[key] = counts.get(key, 0) + 1
    write_result(
        result_path,
        {"conflicts": conflicts, "lockstep_conflicts": lockstep_conflicts, "rounds": rounds, "counts": counts},
    )
    store.close()


def create_only_child(
    path: str, opts: dict[str, Any], ns: str, keys: list[str], wid: int, result_path: str, barrier: Any
) -> None:
    """Try to create every key with ``if_version=0``; report the ones this process won."""
    store = Store(path, **opts)
    won: dict[str, int] = {}
    lost = 0
    barrier.wait(60)
    for key in keys:
        try:
            won[key] = store.put(ns, key, wid, if_version=0)
        except ConflictError as exc:
            assert exc.current_version > 0
            lost += 1
    write_result(result_path, {"won": won, "lost": lost})
    store.close()


# ---------------------------------------------------------------- 2. SIGKILL loop: mixed writes with acks

CRASH_NS: list[tuple[str, ...]] = [("crash", "a"), ("crash", "b"), ("crash", "c", "deep")]


def crash_writer_child(path: str, opts: dict[str, Any], ack_path: str, ready_path: str, wid: int, inc: int) -> None:
    """Mixed puts, updates, deletes and cross-namespace batches, each acked after it returned.

    Ack lines: ``[kind, namespace, key, value]``. Runs until killed.
    """
    fd = open_ack(ack_path)
    try:
        store = Store(path, **opts)
        rng = random.Random(wid * 100_003 + inc)
        touch(ready_path)
        i = 0
        while True:
            i += 1
            ns = rng.choice(CRASH_NS)
            r = rng.random()
            if r < 0.3:  # a counter every writer increments
                key = f"ctr{rng.randrange(6)}"
                got = store.update(ns, key, incr_padded)
                ack(fd, "upd", ns_str(ns), key, got["n"])
            elif r < 0.6:  # a new key only this incarnation writes
                key = f"p{wid}-{inc}-{i}"
                store.put(ns, key, {"n": i, "pad": PAD})
                ack(fd, "put", ns_str(ns), key, i)
            elif r < 0.7:  # this writer's own key, overwritten with a growing sequence
                key = f"last{wid}"
                seq = inc * 1_000_000 + i
                store.put(ns, key, {"n": seq, "pad": PAD})
                ack(fd, "last", ns_str(ns), key, seq)
            elif r < 0.8:  # written then deleted: must stay deleted
                key = f"d{wid}-{inc}-{i}"
                store.put(ns, key, {"n": i, "pad": PAD})
                assert store.delete(ns, key)
                ack(fd, "del", ns_str(ns), key, 0)
            else:  # all or nothing across three namespaces
                tag = f"b{wid}-{inc}-{i}"
                with store.batch() as b:
                    for n in CRASH_NS:
                        b.update(n, "bctr", incr_padded)
                    for n in CRASH_NS:
                        b.put(n, tag, {"n": i, "pad": PAD})
                ack(fd, "batch", "", tag, b.results[0]["n"])
    except BaseException as exc:
        ack(fd, "error", "", "", repr(exc))
        raise


def verify_crash_acks(store: Store, acks: list[list[Any]]) -> dict[str, int]:
    """Every acked write of :func:`crash_writer_child` is there with at least its acked value."""
    errors = [a for a in acks if a[0] == "error"]
    assert not errors, f"a writer failed: {errors}"
    values: dict[tuple[str, str], Any] = {}
    for ns in CRASH_NS:
        for it in store.items(ns):
            values[(ns_str(ns), it.key)] = it.value
    floors: dict[tuple[str, str], int] = {}
    checked = 0
    for kind, ns, key, v in acks:
        if kind in ("upd", "last"):
            floors[(ns, key)] = max(floors.get((ns, key), 0), v)
        elif kind == "put":
            assert values.get((ns, key)) == {"n": v, "pad": PAD}, f"acked put {ns}/{key}={v} lost"
            checked += 1
        elif kind == "del":
            assert (ns, key) not in values, f"acked delete of {ns}/{key} undone: {values[(ns, key)]}"
            checked += 1
        elif kind == "batch":
            for n in CRASH_NS:
                assert (ns_str(n), key) in values, f"acked batch {key} missing in {ns_str(n)}"
            floors[("*", "bctr")] = max(floors.get(("*", "bctr"), 0), v)
            checked += 1
    for (ns, key), floor in floors.items():
        if ns == "*":
            continue
        got = values.get((ns, key))
        assert got is not None and got["n"] >= floor, f"{ns}/{key} is {got}, acked at least {floor}"
        checked += 1
    # Batches are all or nothing, acked or not: the three counters agree, and
    # every batch tag is in all three namespaces or in none.
    bctr = {values.get((ns_str(n), "bctr"), {"n": 0})["n"] for n in CRASH_NS}
    assert len(bctr) == 1, f"batch counters disagree: {bctr}"
    assert bctr.pop() >= floors.get(("*", "bctr"), 0)
    tags = [{k for (n, k) in values if n == ns_str(ns) and k.startswith("b") and k != "bctr"} for ns in CRASH_NS]
    assert tags[0] == tags[1] == tags[2], "a batch landed in some namespaces only"
    return {"acks": len(acks), "checked": checked, "records": len(values)}


# ---------------------------------------------------------------- 3. batches killed mid-commit


def gen_keys(namespaces: int = 4, per_ns: int = 2) -> list[list[Any]]:
    return [[["gen", f"n{i}"], f"key{j}"] for i in range(namespaces) for j in range(per_ns)]


def gen_batch_child(path: str, opts: dict[str, Any], keys: list[list[Any]], ack_path: str, ready_path: str) -> None:
    """Commit batches writing one generation number to all ``keys``; runs until killed.

    On start (after the store's open-time recovery) it checks the keys agree.
    """
    fd = open_ack(ack_path)
    try:
        store = Store(path, **opts)
        seen = {json.dumps(store.get(tuple(ns), k)) for ns, k in keys}
        if len(seen) != 1:
            ack(fd, "torn", "", "", sorted(seen))
        touch(ready_path)
        g = max([a[3] for a in read_acks(ack_path) if a[0] == "gen"], default=0)
        while True:
            g += 1
            with store.batch() as b:
                for ns, k in keys:
                    b.put(tuple(ns), k, {"g": g, "pad": PAD})
            ack(fd, "gen", "", "", g)
    except BaseException as exc:
        ack(fd, "error", "", "", repr(exc))
        raise


def batch_crash_child(path: str, opts: dict[str, Any], keys: list[list[Any]], point: str) -> None:
    """Commit generation 1, then die at ``point`` while committing generation 2.

    Points: ``before-commit`` (at the intent's rename), ``after-commit`` (at
    the first shard rename after it), ``mid-apply`` (at the second one),
    ``before-cleanup`` (all applied, before the intent is removed).
    """
    store = Store(path, **opts)
    with store.batch() as b:
        for ns, k in keys:
            b.put(tuple(ns), k, {"g": 1})
    real_replace, real_unlink = os.replace, os.unlink
    state = {"committed": False, "applied": 0}

    def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        d = os.fspath(dst)
        if d.endswith(".batch"):
            if point == "before-commit":
                die()
            real_replace(src, dst, *a, **kw)
            state["committed"] = True
            return
        if state["committed"] and d.endswith(".shard"):
            if point == "after-commit" or (point == "mid-apply" and state["applied"] == 1):
                die()
            state["applied"] += 1
        real_replace(src, dst, *a, **kw)

    def unlink(p: Any, *a: Any, **kw: Any) -> None:
        if point == "before-cleanup" and os.fspath(p).endswith(".batch"):
            die()
        real_unlink(p, *a, **kw)

    os.replace = replace  # type: ignore[assignment]
    os.unlink = unlink  # type: ignore[assignment]
    with store.batch() as b:
        for ns, k in keys:
            b.put(tuple(ns), k, {"g": 2})
    raise SystemExit(3)  # the crash point was never reached


# ---------------------------------------------------------------- splits killed at a chosen point


def split_crash_child(path: str, opts: dict[str, Any], ns: list[str], point: str, ack_path: str) -> None:
    """Put keys ``k0, k1, ...`` (acked) until the first split, and die at ``point`` inside it.

    Points: ``after-flag`` (parent flagged, no leaf yet), ``after-first-leaf``,
    ``before-unlink`` (every leaf written, parent not yet removed).
    """
    from filemem import _engine

    store = Store(path, **opts)
    fd = open_ack(ack_path)
    real_split, real_replace, real_unlink = _engine.Engine._split, os.replace, os.unlink
    state = {"in_split": False, "shard_renames": 0}

    def split(self: Any, view: Any, shard: Any, **kw: Any) -> None:
        state["in_split"] = True
        real_split(self, view, shard, **kw)
        state["in_split"] = False

    def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        if state["in_split"] and os.fspath(dst).endswith(".shard"):
            state["shard_renames"] += 1
            n = state["shard_renames"]  # 1: the flagged parent, 2: first leaf, ...
            if (point == "after-flag" and n == 2) or (point == "after-first-leaf" and n == 3):
                die()
        real_replace(src, dst, *a, **kw)

    def unlink(p: Any, *a: Any, **kw: Any) -> None:
        if state["in_split"] and point == "before-unlink" and os.fspath(p).endswith(".shard"):
            die()
        real_unlink(p, *a, **kw)

    _engine.Engine._split = split  # type: ignore[method-assign]
    os.replace = replace  # type: ignore[assignment]
    os.unlink = unlink  # type: ignore[assignment]
    for i in range(10_000):
        store.put(tuple(ns), f"k{i}", {"i": i, "pad": PAD})
        ack(fd, "put", ns_str(tuple(ns)), f"k{i}", i)
    raise SystemExit(3)  # never split


# ---------------------------------------------------------------- 4. writer starvation


def snapshot_reader_child(
    path: str,
    opts: dict[str, Any],
    reads: list[list[Any]],
    hold_s: float,
    stop_path: str,
    ready_path: str,
    result_path: str,
) -> None:
    """Snapshots reading ``reads`` ([namespace, key] pairs), each held ``hold_s``, until told to stop."""
    store = Store(path, **opts)
    touch(ready_path)
    n = 0
    while not os.path.exists(stop_path):
        with store.snapshot() as s:
            for ns, k in reads:
                s.get(tuple(ns), k)
            time.sleep(hold_s)
        n += 1
    write_result(result_path, {"snapshots": n})
    store.close()


def latency_writer_child(
    path: str, opts: dict[str, Any], writes: list[list[Any]], seconds: float, result_path: str
) -> None:
    """Write ``writes`` ([namespace, key] pairs; a batch if more than one) for ``seconds``; time each."""
    store = Store(path, **opts)
    lat: list[float] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        t0 = time.monotonic()
        if len(writes) == 1:
            store.put(tuple(writes[0][0]), writes[0][1], i)
        else:
            with store.batch() as b:
                for ns, k in writes:
                    b.put(tuple(ns), k, i)
        lat.append(time.monotonic() - t0)
        time.sleep(0.005)
    lat.sort()
    write_result(
        result_path,
        {"n": len(lat), "max": lat[-1], "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)], "last": i},
    )
    store.close()


# ---------------------------------------------------------------- 6. snapshot consistency


def accounts(namespaces: int = 3, per_ns: int = 4) -> list[list[Any]]:
    return [[["bank", f"branch{i}"], f"acct{j}"] for i in range(namespaces) for j in range(per_ns)]


def mover_child(
    path: str,
    opts: dict[str, Any],
    accts: list[list[Any]],
    seconds: float,
    seed: int,
    result_path: str,
    moving_path: str | None = None,
) -> None:
    """Move money between two accounts in one batch, again and again; add filler keys so shards split.

    ``moving_path`` is created once the store is open, right before the first move.
    """
    store = Store(path, **opts)
    if moving_path is not None:
        touch(moving_path)
    rng = random.Random(seed)
    moves = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        (na, ka), (nb, kb) = rng.sample(accts, 2)
        amount = rng.randint(1, 50)
        with store.batch() as b:
            b.update(tuple(na), ka, adder(-amount))
            b.update(tuple(nb), kb, adder(amount))
        moves += 1
        if moves % 4 == 0:
            ns = rng.choice(accts)[0]
            store.put(tuple(ns), f"filler{moves}", PAD)
    write_result(result_path, {"moves": moves})
    store.close()


def sum_reader_child(
    path: str,
    opts: dict[str, Any],
    accts: list[list[Any]],
    total: int,
    stop_path: str,
    result_path: str,
    ready_path: str | None = None,
    moving_path: str | None = None,
) -> None:
    """Read every account inside one snapshot (by get or by items); the sum must never change.

    Creates ``ready_path`` after its first snapshot; ``during`` counts the
    snapshots begun once ``moving_path`` exists (the mover is moving).
    """
    store = Store(path, **opts)
    namespaces = sorted({tuple(ns) for ns, _ in accts})
    names = {(tuple(ns), k) for ns, k in accts}
    snapshots = during = 0
    moving = moving_path is None
    bad: list[Any] = []
    while not os.path.exists(stop_path):
        if snapshots == 1 and ready_path is not None:
            touch(ready_path)
        if not moving and moving_path is not None:
            moving = os.path.exists(moving_path)
        during += moving
        with store.snapshot() as s:
            if snapshots % 2 == 0:
                got = [s.get(tuple(ns), k) for ns, k in accts]
            else:
                got = [it.value for ns in namespaces for it in s.items(ns) if (ns, it.key) in names]
        snapshots += 1
        if len(got) != len(accts) or sum(got) != total:
            bad.append(got)
    write_result(result_path, {"snapshots": snapshots, "during": during, "bad": bad[:5], "n_bad": len(bad)})
    store.close()


# ---------------------------------------------------------------- parent-side helpers


def start(ctx: Any, target: Callable[..., None], args: Iterable[Any]) -> mp.process.BaseProcess:
    p = ctx.Process(target=target, args=tuple(args), daemon=True)
    p.start()
    return p


def wait_for(path: str, proc: mp.process.BaseProcess, timeout: float = 60.0) -> None:
    """Wait until ``proc`` has created ``path``; fail if it died first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if not proc.is_alive():
            raise AssertionError(f"child {proc.name} exited with {proc.exitcode} before {os.path.basename(path)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"child {proc.name} did not create {path} in {timeout}s")
        time.sleep(0.005)


def join_ok(procs: list[mp.process.BaseProcess], timeout: float) -> None:
    """Join children that should finish by themselves; fail on a timeout or a bad exit code."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [p.name for p in procs if p.is_alive()]
    assert not hung, f"children still running after {timeout}s: {hung}"
    failed = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    assert not failed, f"children failed: {failed}"


def sigkill(proc: mp.process.BaseProcess) -> None:
    """SIGKILL ``proc`` (it must still be alive: it never exits on its own) and reap it."""
    assert proc.is_alive(), f"child {proc.name} exited early with {proc.exitcode}"
    proc.kill()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode


def shard_files(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".shard")]


def finding_codes(findings: list[filemem.Finding]) -> list[str]:
    return [f.code for f in findings]
