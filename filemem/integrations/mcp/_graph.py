"""The reference memory server's knowledge graph, kept as filemem records (no MCP SDK needed).

Invariant: every entity is one record and every relation is one record, and
every change is one atomic filemem write (a batch of ``update``/``delete``
ops), so any number of processes may change one graph at once and no change
is ever lost: there is no whole-graph file that a process reads, edits and
writes back (which is how the reference ``@modelcontextprotocol/server-memory``
loses entities when two servers share its ``memory.jsonl``).

Layout under the graph's namespace ``NS`` (default ``("mcp", "memory")``)::

    NS + ("entities",)   key: the entity name (escaped, see _entity_key)
                         value: {"name", "entityType", "observations", "order"}
    NS + ("relations",)  key: a digest of (from, to, relationType)
                         value: {"from", "to", "relationType", "order"}

``order`` is a creation stamp (nanoseconds, strictly increasing within a
process) so that lists come back in creation order as the reference's do.
Each method mirrors one of the reference's ``KnowledgeGraphManager`` methods
and returns what it returns; see docs/integrations.md for the differences.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from filemem import ConflictError, FileMemError, InvalidValueError, Store

__all__ = [
    "DEFAULT_NAMESPACE",
    "Entity",
    "EntityNotFoundError",
    "Graph",
    "KnowledgeGraph",
    "Relation",
    "read_jsonl",
]

#: Where a graph lives when no namespace is given.
DEFAULT_NAMESPACE: Final = ("mcp", "memory")
# Keys longer than this (after escaping) are replaced by a digest: filemem keys stop at 1024 characters.
_KEY_MAX_CHARS: Final = 512
# A create that races a delete of the same key retries; past this, something is wrong.
_MAX_RETRIES: Final = 100


class EntityNotFoundError(FileMemError, LookupError):
    """``add_observations`` named an entity that does not exist; nothing was written.

    The message is the reference server's own: ``Entity with name X not found``.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"Entity with name {name} not found")
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name,))


class _Vanished(Exception):  # noqa: N818 - a private control-flow signal, never seen by callers
    """An entity read a moment ago was deleted before the write: abort the batch and retry."""


@dataclass(frozen=True, slots=True)
class Entity:
    """A node of the graph, as the reference's tools show it."""

    name: str
    entityType: str  # noqa: N815 - the reference's wire name
    observations: list[str] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        """The JSON object the reference returns (its key order)."""
        return {"name": self.name, "entityType": self.entityType, "observations": list(self.observations)}


@dataclass(frozen=True, slots=True)
class Relation:
    """A directed, typed edge between two entity names (the endpoints need not exist, as in the reference)."""

    source: str
    target: str
    relationType: str  # noqa: N815 - the reference's wire name

    def wire(self) -> dict[str, Any]:
        """The JSON object the reference returns: ``{"from", "to", "relationType"}``."""
        return {"from": self.source, "to": self.target, "relationType": self.relationType}


@dataclass(frozen=True, slots=True)
class Graph:
    """A set of entities and the relations among them, in creation order."""

    entities: list[Entity]
    relations: list[Relation]

    def wire(self) -> dict[str, Any]:
        """``{"entities": [...], "relations": [...]}`` as the reference returns it."""
        return {"entities": [e.wire() for e in self.entities], "relations": [r.wire() for r in self.relations]}


def _entity_key(name: str) -> str:
    """A valid filemem key that names exactly one entity name.

    ``%``, ``/`` and NUL are percent-escaped (so the result never holds ``/``
    or NUL and escaping is reversible); the names a key may not be (``""``,
    ``"."``, ``".."``) get a ``%`` form that escaping never produces; a name
    too long for a key becomes its digest (the record keeps the name, and
    reads compare it).
    """
    esc = name.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    if esc in ("", ".", ".."):
        return "%" + {"": "E", ".": "D", "..": "DD"}[esc]
    if len(esc) > _KEY_MAX_CHARS or (not esc.isascii() and not _utf8_ok(esc)):
        return "%H" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return esc


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _relation_key(rel: Relation) -> str:
    raw = json.dumps([rel.source, rel.target, rel.relationType], ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _entity_of(value: Any) -> tuple[Entity, int] | None:
    """The entity a record holds, with its order, or None for a record that is not one of ours."""
    if not isinstance(value, Mapping):
        return None
    name, etype, obs = value.get("name"), value.get("entityType"), value.get("observations")
    if not isinstance(name, str) or not isinstance(etype, str) or not isinstance(obs, list):
        return None
    order = value.get("order")
    return Entity(name, etype, [o for o in obs if isinstance(o, str)]), order if isinstance(order, int) else 0


def _relation_of(value: Any) -> tuple[Relation, int] | None:
    if not isinstance(value, Mapping):
        return None
    src, dst, rtype = value.get("from"), value.get("to"), value.get("relationType")
    if not isinstance(src, str) or not isinstance(dst, str) or not isinstance(rtype, str):
        return None
    order = value.get("order")
    return Relation(src, dst, rtype), order if isinstance(order, int) else 0


class _Clock:
    """Creation stamps: wall-clock nanoseconds, strictly increasing within this process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


_CLOCK: Final = _Clock()


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidValueError(f"{what} must be a string, not {type(value).__name__}")
    if not value.isascii() and not _utf8_ok(value):
        # Refused here, before any write: no codec can store it (JSON on the wire cannot carry it either).
        raise InvalidValueError(f"{what} {value!r} is not valid Unicode (a lone surrogate)")
    return value


def _texts(values: Any, what: str) -> list[str]:
    if not isinstance(values, (list, tuple)):
        raise InvalidValueError(f"{what} must be a list of strings, not {type(values).__name__}")
    return [_text(v, f"each of {what}") for v in values]


class KnowledgeGraph:
    """The reference memory server's graph operations over a filemem store, safe for many processes.

    Example::

        import filemem
        from filemem.integrations.mcp import KnowledgeGraph

        with filemem.Store("./memories") as store:
            kg = KnowledgeGraph(store)
            kg.create_entities([{"name": "Ada", "entityType": "person", "observations": ["writes Python"]}])
            kg.create_relations([{"from": "Ada", "to": "filemem", "relationType": "uses"}])
            print(kg.search_nodes("python").wire())

    Every method takes and returns what the reference's tool of the same name
    does (plain JSON-like objects in, :class:`Graph` or lists out); bad input
    raises ``InvalidValueError`` and writes nothing.
    """

    def __init__(self, store: Store, namespace: Sequence[str] = DEFAULT_NAMESPACE) -> None:
        self.store = store
        self.namespace = tuple(namespace)
        self._entities = (*self.namespace, "entities")
        self._relations = (*self.namespace, "relations")

    # ------------------------------------------------------------------ parsing input

    @staticmethod
    def _parse_entities(entities: Iterable[Any]) -> list[Entity]:
        out = []
        for e in _list(entities, "entities"):
            if not isinstance(e, Mapping):
                raise InvalidValueError(f"each entity must be an object, not {type(e).__name__}")
            out.append(
                Entity(
                    _text(e.get("name"), "name"),
                    _text(e.get("entityType"), "entityType"),
                    _texts(e.get("observations"), "observations"),
                )
            )
        return out

    @staticmethod
    def _parse_relations(relations: Iterable[Any]) -> list[Relation]:
        out = []
        for r in _list(relations, "relations"):
            if not isinstance(r, Mapping):
                raise InvalidValueError(f"each relation must be an object, not {type(r).__name__}")
            out.append(
                Relation(
                    _text(r.get("from"), "from"), _text(r.get("to"), "to"), _text(r.get("relationType"), "relationType")
                )
            )
        return out

    # ------------------------------------------------------------------ reads

    def _read(self, *, entities: bool = True, relations: bool = True) -> tuple[list[Entity], list[Relation]]:
        """Both namespaces as of one instant (a snapshot), each in creation order."""
        ents: list[tuple[int, str, Entity]] = []
        rels: list[tuple[int, str, Relation]] = []
        with self.store.snapshot() as snap:
            if entities:
                for item in snap.items(self._entities):
                    got = _entity_of(item.value)
                    if got is not None:
                        ents.append((got[1], item.key, got[0]))
            if relations:
                for item in snap.items(self._relations):
                    rgot = _relation_of(item.value)
                    if rgot is not None:
                        rels.append((rgot[1], item.key, rgot[0]))
        ents.sort(key=lambda t: (t[0], t[1]))
        rels.sort(key=lambda t: (t[0], t[1]))
        return [e for _, _, e in ents], [r for _, _, r in rels]

    def _existing(self, names: Iterable[str]) -> set[str]:
        found = set()
        for name in names:
            got = _entity_of(self.store.get(self._entities, _entity_key(name), consistency="strict"))
            if got is not None and got[0].name == name:
                found.add(name)
        return found

    def read_graph(self) -> Graph:
        """The whole graph."""
        ents, rels = self._read()
        return Graph(ents, rels)

    def search_nodes(self, query: str) -> Graph:
        """Entities whose name, type or an observation contains ``query`` (case-insensitive), and their relations.

        A relation is included when at least one of its ends is a matching entity (as the reference does).
        """
        q = _text(query, "query").lower()
        ents, rels = self._read()
        hits = [
            e
            for e in ents
            if q in e.name.lower() or q in e.entityType.lower() or any(q in o.lower() for o in e.observations)
        ]
        names = {e.name for e in hits}
        return Graph(hits, [r for r in rels if r.source in names or r.target in names])

    def open_nodes(self, names: Sequence[str]) -> Graph:
        """The named entities (in creation order; missing names are skipped) and every relation touching one."""
        wanted = set(_texts(names, "names"))
        ents: list[tuple[int, str, Entity]] = []
        with self.store.snapshot() as snap:
            # One read per name, not the whole entity namespace: open_nodes is the common "recall" call.
            for name in wanted:
                key = _entity_key(name)
                got = _entity_of(snap.get(self._entities, key))
                if got is not None and got[0].name == name:
                    ents.append((got[1], key, got[0]))
            rels = [r for r in (_relation_of(i.value) for i in snap.items(self._relations)) if r is not None]
        ents.sort(key=lambda t: (t[0], t[1]))
        found = {e.name for _, _, e in ents}
        rels.sort(key=lambda t: t[1])
        return Graph([e for _, _, e in ents], [r for r, _ in rels if r.source in found or r.target in found])

    # ------------------------------------------------------------------ writes

    def create_entities(self, entities: Iterable[Any]) -> list[Entity]:
        """Create the entities whose names are new; return those created (the others are left as they are).

        Two processes creating one name at once: exactly one creates it, and
        only that one returns it.
        """
        parsed = self._parse_entities(entities)
        if not parsed:
            return []
        existing = self._existing({e.name for e in parsed})
        proposals: list[tuple[Entity, dict[str, Any]]] = []
        for e in parsed:
            if e.name in existing or any(p.name == e.name for p, _ in proposals):
                continue  # a name already taken, or given twice in this call: the first one wins
            proposals.append((e, {**e.wire(), "order": _CLOCK.next()}))
        if not proposals:
            return []
        with self.store.batch() as b:
            for _, value in proposals:
                b.update(self._entities, _entity_key(value["name"]), _create_if_absent(value))
        # The update returned the record as it now stands: ours only if we created it.
        return [e for (e, value), now in zip(proposals, b.results, strict=True) if now == value]

    def create_relations(self, relations: Iterable[Any]) -> list[Relation]:
        """Create the relations that are new; return those created (endpoints are not checked, as in the reference)."""
        parsed = self._parse_relations(relations)
        proposals: list[tuple[Relation, str, dict[str, Any]]] = []
        for r in parsed:
            key = _relation_key(r)
            if any(k == key for _, k, _ in proposals):
                continue
            proposals.append((r, key, {**r.wire(), "order": _CLOCK.next()}))
        if not proposals:
            return []
        present = {k for _, k, _ in proposals if self.store.get_item(self._relations, k, consistency="strict")}
        todo = [p for p in proposals if p[1] not in present]
        if not todo:
            return []
        with self.store.batch() as b:
            for _, key, value in todo:
                b.update(self._relations, key, _create_if_absent(value))
        return [r for (r, _, value), now in zip(todo, b.results, strict=True) if now == value]

    def add_observations(self, observations: Iterable[Any]) -> list[dict[str, Any]]:
        """Append observations the entities lack; return ``[{"entityName", "addedObservations"}]`` in input order.

        All or nothing: if any named entity is missing, raise
        :class:`EntityNotFoundError` and change nothing (as the reference).
        """
        requests: list[tuple[str, list[str]]] = []
        for o in _list(observations, "observations"):
            if not isinstance(o, Mapping):
                raise InvalidValueError(f"each observation must be an object, not {type(o).__name__}")
            requests.append((_text(o.get("entityName"), "entityName"), _texts(o.get("contents"), "contents")))
        if not requests:
            return []
        by_name: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(requests):
            by_name.setdefault(name, []).append(i)
        added: dict[int, list[str]] = {}

        def adder(name: str) -> Any:
            def fn(current: Any) -> Any:
                got = _entity_of(current)
                if got is None or got[0].name != name:
                    raise EntityNotFoundError(name)
                obs = list(got[0].observations)
                for i in by_name[name]:
                    # As the reference: filter against the list as it stood before this request.
                    new = [c for c in requests[i][1] if c not in obs]
                    obs.extend(new)
                    added[i] = new
                return {**current, "observations": obs}

            return fn

        # The first missing name in input order is the one reported, as the reference's map() would.
        present = self._existing(by_name)
        missing = [n for n, _ in requests if n not in present]
        if missing:
            raise EntityNotFoundError(missing[0])
        with self.store.batch() as b:
            for name in by_name:
                b.update(self._entities, _entity_key(name), adder(name))
        return [{"entityName": name, "addedObservations": added[i]} for i, (name, _) in enumerate(requests)]

    def delete_entities(self, entity_names: Sequence[str]) -> None:
        """Delete the named entities and every relation from or to one of them; missing names are ignored."""
        names = set(_texts(entity_names, "entityNames"))
        if not names:
            return
        _, rels = self._read(entities=False)
        with self.store.batch() as b:
            for name in names:
                b.delete(self._entities, _entity_key(name))
            for r in rels:
                if r.source in names or r.target in names:
                    b.delete(self._relations, _relation_key(r))

    def delete_observations(self, deletions: Iterable[Any]) -> None:
        """Remove the given observations from the named entities; missing entities are ignored."""
        requests: list[tuple[str, set[str]]] = []
        for d in _list(deletions, "deletions"):
            if not isinstance(d, Mapping):
                raise InvalidValueError(f"each deletion must be an object, not {type(d).__name__}")
            requests.append(
                (_text(d.get("entityName"), "entityName"), set(_texts(d.get("observations"), "observations")))
            )
        drop: dict[str, set[str]] = {}
        for name, obs in requests:
            drop.setdefault(name, set()).update(obs)
        for _ in range(_MAX_RETRIES):
            present = self._existing(drop)
            if not present:
                return
            try:
                with self.store.batch() as b:
                    for name in present:
                        b.update(self._entities, _entity_key(name), _remover(name, drop[name]))
            except _Vanished:
                continue  # deleted between our read and our write: look again
            return
        raise ConflictError(f"delete_observations: entities kept vanishing for {_MAX_RETRIES} attempts")

    def delete_relations(self, relations: Iterable[Any]) -> None:
        """Delete the given relations; those that do not exist are ignored."""
        parsed = self._parse_relations(relations)
        if not parsed:
            return
        with self.store.batch() as b:
            for r in parsed:
                b.delete(self._relations, _relation_key(r))

    # ------------------------------------------------------------------ import

    def import_graph(self, graph: Graph) -> tuple[int, int]:
        """Create ``graph``'s entities and relations (existing ones are kept); return how many were created."""
        created = self.create_entities([e.wire() for e in graph.entities])
        rels = self.create_relations([r.wire() for r in graph.relations])
        return len(created), len(rels)


def _list(values: Any, what: str) -> list[Any]:
    if not isinstance(values, (list, tuple)):
        raise InvalidValueError(f"{what} must be a list, not {type(values).__name__}")
    return list(values)


def _create_if_absent(value: dict[str, Any]) -> Any:
    def fn(current: Any) -> Any:
        # Another process created the same key since we looked: keep theirs, report ours as not created.
        return current if current is not None else value

    return fn


def _remover(name: str, drop: set[str]) -> Any:
    def fn(current: Any) -> Any:
        got = _entity_of(current)
        if got is None or got[0].name != name:
            raise _Vanished(name)
        return {**current, "observations": [o for o in got[0].observations if o not in drop]}

    return fn


def read_jsonl(text: str, *, source: str = "memory.jsonl") -> Graph:
    """Parse a reference server's memory file (JSON Lines) into a :class:`Graph`.

    Each non-blank line is ``{"type": "entity", "name", "entityType",
    "observations"}`` or ``{"type": "relation", "from", "to",
    "relationType"}``; lines of other types are skipped, as the reference
    skips them. A line that is not JSON, or an entity or relation missing a
    field, raises ``InvalidValueError`` naming the line.

    Example::

        graph = read_jsonl(open("memory.jsonl", encoding="utf-8").read())
    """
    entities: list[Entity] = []
    relations: list[Relation] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidValueError(f"{source}:{n}: not JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise InvalidValueError(f"{source}:{n}: expected a JSON object, got {type(obj).__name__}")
        try:
            if obj.get("type") == "entity":
                entities.extend(KnowledgeGraph._parse_entities([obj]))
            elif obj.get("type") == "relation":
                relations.extend(KnowledgeGraph._parse_relations([obj]))
        except InvalidValueError as exc:
            raise InvalidValueError(f"{source}:{n}: {exc}") from exc
    return Graph(entities, relations)
