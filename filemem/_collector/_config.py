"""Collector settings: a dataclass with defaults, a TOML file, environment variables (layer L4).

Precedence, lowest first: the defaults below, a TOML file (its ``[collector]``
table, or its top level), ``FILEMEM_COLLECTOR_<FIELD>`` environment variables,
then keyword arguments given to ``store.collector(...)``. Every value is
checked when the collector is built; a bad one raises
:class:`~filemem.InvalidValueError` naming the setting and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

from .._errors import InvalidValueError

__all__ = ["ENV_PREFIX", "CollectorConfig", "OnFull"]

#: Environment variables named ``FILEMEM_COLLECTOR_<FIELD>`` override the file.
ENV_PREFIX: Final = "FILEMEM_COLLECTOR_"

OnFull = Literal["block", "raise", "drop_oldest"]

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """How a collector batches, journals, retries and pushes back.

    Example::

        cfg = filemem.CollectorConfig(batch_size=500, on_full="drop_oldest")
        with store.collector(cfg) as c:
            c.collect("agent-1/events", "ev-1", {"ok": True})

    Attributes:
        batch_size: most records applied in one batch (one lock and one fsync per shard).
        batch_timeout: seconds the writer waits for a batch to fill before applying what it has.
        max_queue: most records accepted but not yet applied; then ``on_full`` decides.
        on_full: ``"block"`` (wait for room, up to ``block_timeout``), ``"raise"``
            (QueueFullError) or ``"drop_oldest"`` (the oldest queued record of the
            lowest priority moves to the dead-letter file, counted as dropped).
        block_timeout: seconds ``on_full="block"`` waits before QueueFullError; None: for ever.
        journal: append every record to this process's journal before applying it (crash-safe).
        journal_group_delay: seconds the journal thread waits to gather more records per fsync.
        max_retries: attempts of a failing batch before its records are tried one by one
            and those that still fail go to the dead-letter file.
        backoff_base: first retry delay in seconds (doubles per attempt, full jitter).
        backoff_max: longest retry delay in seconds.
        breaker_threshold: consecutive failed batches that open the circuit breaker.
        breaker_reset: seconds the breaker stays open before one trial batch (half-open).
        close_timeout: seconds ``close()`` waits for the queue to drain; what is left
            stays in the journal (replayed later) or, without a journal, goes to dead letters.
    """

    batch_size: int = 1000
    batch_timeout: float = 0.005
    max_queue: int = 100_000
    on_full: OnFull = "block"
    block_timeout: float | None = None
    journal: bool = True
    journal_group_delay: float = 0.0
    max_retries: int = 5
    backoff_base: float = 0.01
    backoff_max: float = 1.0
    breaker_threshold: int = 5
    breaker_reset: float = 1.0
    close_timeout: float = 30.0

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "mapping") -> CollectorConfig:
        """Build from a dict of settings; unknown names and bad values raise InvalidValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidValueError(f"unknown collector setting(s) {unknown} in {source}; known: {sorted(known)}")
        try:
            return cls(**dict(values))
        except InvalidValueError as exc:
            raise InvalidValueError(f"{exc.message} (from {source})") from None

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> CollectorConfig:
        """Read a TOML file: its ``[collector]`` table if present, else its top level.

        >>> CollectorConfig.from_toml("collector.toml")  # doctest: +SKIP
        """
        return cls.from_mapping(_read_toml(path), source=os.fspath(path))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CollectorConfig:
        """Defaults overridden by ``FILEMEM_COLLECTOR_<FIELD>`` variables (e.g. ``FILEMEM_COLLECTOR_BATCH_SIZE``)."""
        return cls.from_mapping(env_values(os.environ if environ is None else environ), source="environment")

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> CollectorConfig:
        """Defaults < TOML file at ``path`` < environment < ``overrides``, checked once."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(_read_toml(path))
        values.update(env_values(os.environ if environ is None else environ))
        values.update(overrides)
        return cls.from_mapping(values, source=_source(path, overrides))

    def replace(self, **changes: Any) -> CollectorConfig:
        """A copy with some settings changed (checked again)."""
        return self.from_mapping({**dataclasses.asdict(self), **changes}, source="arguments")


def _source(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> str:
    parts = ([os.fspath(path)] if path is not None else []) + ["environment"] + (["arguments"] if overrides else [])
    return " / ".join(parts)


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 - only with a config file: 1.4 MB of RSS otherwise, in every process

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise InvalidValueError(f"cannot read collector config {os.fspath(path)}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidValueError(f"collector config {os.fspath(path)} is not valid TOML: {exc}") from exc
    table = data.get("collector", data)
    if not isinstance(table, dict):
        raise InvalidValueError(f"collector config {os.fspath(path)}: [collector] must be a table")
    return table


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings found in ``environ`` (``FILEMEM_COLLECTOR_*``), converted to their field types."""
    out: dict[str, Any] = {}
    types = {f.name: str(f.type) for f in fields(CollectorConfig)}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        field = name[len(ENV_PREFIX) :].lower()
        kind = types.get(field)
        if kind is None:
            raise InvalidValueError(f"unknown collector setting in environment variable {name}")
        out[field] = _convert(name, raw.strip(), kind)
    return out


def _convert(name: str, raw: str, kind: str) -> Any:
    if "None" in kind and raw.lower() in ("", "none"):
        return None
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise InvalidValueError(f"environment variable {name}={raw!r} is not a number") from None
    if kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise InvalidValueError(f"environment variable {name}={raw!r} is not a boolean (use 1/0, true/false)")
    return raw


def _validate(cfg: CollectorConfig) -> None:
    def number(name: str, *, integer: bool, minimum: float, allow_none: bool = False, strict: bool = False) -> None:
        v = getattr(cfg, name)
        if v is None and allow_none:
            return
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or (v <= minimum if strict else v < minimum):
            what = "an integer" if integer else "a number"
            bound = f"> {minimum}" if strict else f">= {minimum}"
            raise InvalidValueError(f"collector setting {name} must be {what} {bound}, not {v!r}")

    number("batch_size", integer=True, minimum=1)
    number("batch_timeout", integer=False, minimum=0)
    number("max_queue", integer=True, minimum=1)
    number("block_timeout", integer=False, minimum=0, allow_none=True)
    number("journal_group_delay", integer=False, minimum=0)
    number("max_retries", integer=True, minimum=0)
    number("backoff_base", integer=False, minimum=0, strict=True)
    number("backoff_max", integer=False, minimum=0, strict=True)
    number("breaker_threshold", integer=True, minimum=1)
    number("breaker_reset", integer=False, minimum=0, strict=True)
    number("close_timeout", integer=False, minimum=0)
    if cfg.on_full not in ("block", "raise", "drop_oldest"):
        raise InvalidValueError(
            f"collector setting on_full must be 'block', 'raise' or 'drop_oldest', not {cfg.on_full!r}"
        )
    if not isinstance(cfg.journal, bool):
        raise InvalidValueError(f"collector setting journal must be True or False, not {cfg.journal!r}")
    if cfg.backoff_max < cfg.backoff_base:
        raise InvalidValueError(
            f"collector setting backoff_max ({cfg.backoff_max}) must be >= backoff_base ({cfg.backoff_base})"
        )
    if cfg.batch_size > cfg.max_queue:
        raise InvalidValueError(
            f"collector setting batch_size ({cfg.batch_size}) must be <= max_queue ({cfg.max_queue})"
        )
