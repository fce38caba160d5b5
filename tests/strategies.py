"""Hypothesis strategies shared by the property tests.

``messages()`` draws an instance of any registered :class:`~protocols.Message` class. Each class
is built from its pydantic fields, so a Message class added later is covered without touching
this module; only the topology specs, whose validity depends on several fields at once, have
hand-written strategies.
"""

from __future__ import annotations

import functools
import string
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

# Import every module that defines Message classes, so that the registry is full.
import actors.demo  # noqa: F401
import protocols.access
import protocols.common
import protocols.registry
import protocols.runs
import protocols.scheduler
import protocols.supervision  # noqa: F401
from protocols._base import Message, registered_kinds
from protocols._lifecycle import ActorRef, _Boot
from protocols.faults import MESSAGE_FAULT_KINDS, DelaySpec, MessageFault
from protocols.topology import (
    AutoShutdown,
    ChildSpec,
    ClusterConfig,
    Placement,
    RestartType,
    Strategy,
    SupervisorSpec,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

RESTART_TYPES: tuple[RestartType, ...] = get_args(RestartType)
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
AUTO_SHUTDOWNS: tuple[AutoShutdown, ...] = get_args(AutoShutdown)

#: Kinds defined by the tests themselves; they are not part of the wire protocol.
TEST_KIND_PREFIX = "test."


def message_kinds() -> dict[str, type[Message]]:
    """Return the registered kinds of the protocol (without the tests' own ``test.*`` kinds)."""
    return {
        kind: cls
        for kind, cls in sorted(registered_kinds().items())
        if not kind.startswith(TEST_KIND_PREFIX)
    }


# --- Scalars ---------------------------------------------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
int64s = st.integers(INT64_MIN, INT64_MAX)

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), int64s, finite_floats, st.text(max_size=12)
)

#: JSON-able values (what a ``dict[str, Any]`` field may hold), nested a little.
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)

json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=8), json_values, max_size=3
)


# --- Topology specs -----------------------------------------------------------------------

child_ids: st.SearchStrategy[str] = st.text(
    alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=12
)

_identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True)

#: Import targets like ``pkg.mod:Cls``.
start_targets: st.SearchStrategy[str] = st.builds(
    lambda mods, cls: ".".join(mods) + ":" + cls,
    st.lists(_identifiers, min_size=1, max_size=3),
    _identifiers,
)

shutdowns: st.SearchStrategy[float | str] = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.sampled_from(["brutal_kill", "infinity"]),
)


host_names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_caps = st.sampled_from([{"gpu": "a"}, {"zone": "b"}, {"gpu": "b", "disk": "a"}])


def actor_refs() -> st.SearchStrategy[ActorRef]:
    """An address as data: TCP or a simpleSystemBase name."""
    return st.one_of(
        st.builds(
            ActorRef,
            host=st.ip_addresses(v=4).map(str),
            port=st.integers(1, 65535),
        ),
        st.builds(ActorRef, name=st.text(string.ascii_letters, min_size=1, max_size=12)),
    )


def placements() -> st.SearchStrategy[Placement]:
    """A placement: by host or by capabilities."""
    return st.one_of(
        st.builds(Placement, host=host_names),
        st.builds(Placement, capabilities=_caps),
    )


@st.composite
def _restart_and_significant(
    draw: st.DrawFn, *, allow_significant: bool
) -> tuple[RestartType, bool]:
    restart = draw(st.sampled_from(RESTART_TYPES))
    significant = allow_significant and restart != "permanent" and draw(st.booleans())
    return restart, significant


@st.composite
def child_specs(draw: st.DrawFn, *, allow_significant: bool = True) -> ChildSpec:
    """A valid worker ChildSpec; significant only when ``allow_significant``."""
    restart, significant = draw(_restart_and_significant(allow_significant=allow_significant))
    return ChildSpec(
        id=draw(child_ids),
        start=draw(start_targets),
        args=draw(json_objects),
        restart=restart,
        shutdown=draw(shutdowns),
        significant=significant,
        placement=draw(st.none() | placements()),
    )


@st.composite
def supervisor_specs(
    draw: st.DrawFn, *, max_depth: int = 2, allow_significant: bool = True
) -> SupervisorSpec:
    """A valid SupervisorSpec, with nested supervisors up to ``max_depth`` levels below it."""
    strategy = draw(st.sampled_from(STRATEGIES))
    restart, significant = draw(_restart_and_significant(allow_significant=allow_significant))
    flags: dict[str, Any] = {
        "id": draw(child_ids),
        "strategy": strategy,
        "intensity": draw(st.integers(0, 20)),
        "period": draw(st.floats(min_value=0.001, max_value=1e6, allow_nan=False)),
        "restart": restart,
        "shutdown": draw(shutdowns),
        "significant": significant,
    }
    if strategy == "simple_one_for_one":
        flags["auto_shutdown"] = "never"
        flags["template"] = draw(child_specs(allow_significant=False))
        return SupervisorSpec(**flags)
    auto_shutdown = draw(st.sampled_from(AUTO_SHUTDOWNS))
    kids_significant = auto_shutdown != "never"
    child = child_specs(allow_significant=kids_significant)
    if max_depth > 0:
        child = st.one_of(
            child,
            supervisor_specs(max_depth=max_depth - 1, allow_significant=kids_significant),
        )
    flags["auto_shutdown"] = auto_shutdown
    flags["children"] = draw(st.lists(child, max_size=3, unique_by=lambda c: c.id))
    return SupervisorSpec(**flags)


any_child_specs: st.SearchStrategy[ChildSpec | SupervisorSpec] = st.one_of(
    child_specs(), supervisor_specs()
)


@st.composite
def cluster_configs(draw: st.DrawFn) -> ClusterConfig:
    """Valid failure detector settings (suspect_threshold <= threshold)."""
    threshold = draw(st.integers(1, 20))
    return ClusterConfig(
        name=draw(host_names),
        capabilities=draw(st.just({}) | _caps),
        heartbeat_interval=draw(st.sampled_from([0.05, 0.2, 1.0])),
        acceptable_heartbeat_pause=draw(st.sampled_from([0.0, 2.0, 4.5])),
        threshold=float(threshold),
        suspect_threshold=float(draw(st.integers(1, threshold))),
    )


def delay_specs() -> st.SearchStrategy[DelaySpec]:
    """A delay: fixed, uniform or normal."""
    return st.one_of(
        st.builds(DelaySpec, fixed=st.floats(0, 5)),
        st.tuples(st.floats(0, 2), st.floats(0, 2)).map(
            lambda t: DelaySpec(uniform=(min(t), max(t)))
        ),
        st.builds(DelaySpec, normal=st.tuples(st.floats(0, 2), st.floats(0, 1))),
    )


@st.composite
def message_faults(draw: st.DrawFn) -> MessageFault:
    """A valid message fault: one trigger at most, a delay exactly for delay faults, seconds
    exactly for hangs, a crash point for kills."""
    kind = draw(st.sampled_from(MESSAGE_FAULT_KINDS))
    trigger = draw(st.sampled_from(["nth", "every_nth", "probability", None]))
    fields: dict[str, Any] = {"fault": kind, "target": draw(st.sampled_from(["root/*", "root/a"]))}
    if trigger == "probability":
        fields["probability"] = draw(st.floats(0, 1))
    elif trigger is not None:
        fields[trigger] = draw(st.integers(1, 100))
    if kind == "delay":
        fields["delay"] = draw(delay_specs())
    if kind in ("hang", "slow_start", "slow_shutdown"):
        fields["seconds"] = draw(st.floats(0.01, 300))
    if kind == "kill":
        fields["point"] = draw(st.sampled_from(["before_handler", "after_handler", "after_reply"]))
    if kind == "reorder":
        fields["window"] = draw(st.integers(2, 1000))
    if kind == "corrupt":
        fields["corrupt"] = draw(st.sampled_from(["invalid", "truncated"]))
    return MessageFault(**fields, seed=draw(st.integers(0, 2**31)))


def boots() -> st.SearchStrategy[_Boot]:
    """A guardian boot message (kept small: a large spec and all the optional fields at once
    overrun Hypothesis's draw budget)."""
    return st.builds(
        _Boot,
        spec=st.one_of(child_specs(), supervisor_specs(max_depth=0)),
        max_message_size=st.integers(1024, 2**24),
        cluster=cluster_configs(),
        owner_pid=st.none() | st.integers(1, 2**22),
    )


#: Models whose validity spans several fields get hand-written strategies.
MODEL_OVERRIDES: dict[type[BaseModel], Callable[[], st.SearchStrategy[Any]]] = {
    ChildSpec: child_specs,
    SupervisorSpec: supervisor_specs,
    ActorRef: actor_refs,
    Placement: placements,
    ClusterConfig: cluster_configs,
    DelaySpec: delay_specs,
    MessageFault: message_faults,
    _Boot: boots,
}


# --- Strategies derived from annotations -------------------------------------------------

_CONSTRAINT_NAMES = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    """Collect the pydantic / annotated-types constraints found in a field's metadata."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_constraints(list(item.metadata)))
            continue
        for name in _CONSTRAINT_NAMES:
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return found


def _int_strategy(c: dict[str, Any]) -> st.SearchStrategy[int]:
    low = INT64_MIN
    high = INT64_MAX
    if "ge" in c:
        low = max(low, int(c["ge"]))
    if "gt" in c:
        low = max(low, int(c["gt"]) + 1)
    if "le" in c:
        high = min(high, int(c["le"]))
    if "lt" in c:
        high = min(high, int(c["lt"]) - 1)
    return st.integers(low, high)


def _float_strategy(c: dict[str, Any]) -> st.SearchStrategy[float]:
    return st.floats(
        min_value=c.get("ge", c.get("gt")),
        max_value=c.get("le", c.get("lt")),
        exclude_min="gt" in c,
        exclude_max="lt" in c,
        allow_nan=False,
        allow_infinity=False,
    )


def _str_strategy(c: dict[str, Any]) -> st.SearchStrategy[str]:
    if "pattern" in c:
        base: st.SearchStrategy[str] = st.from_regex(c["pattern"], fullmatch=True)
        if "min_length" in c or "max_length" in c:
            low, high = c.get("min_length", 0), c.get("max_length")
            base = base.filter(lambda s: len(s) >= low and (high is None or len(s) <= high))
        return base
    return st.text(min_size=c.get("min_length", 0), max_size=c.get("max_length", 16))


def from_annotation(annotation: Any, metadata: list[Any] | None = None) -> st.SearchStrategy[Any]:
    """Return a strategy for values valid for ``annotation`` under the constraints in
    ``metadata``."""
    c = _constraints(metadata or [])
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Annotated:
        base, *extras = args
        return from_annotation(base, [*(metadata or []), *extras])
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of(*(from_annotation(arg, metadata) for arg in args))
    if annotation is type(None) or annotation is None:
        return st.none()
    if annotation is Any:
        return json_values
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return _int_strategy(c)
    if annotation is float:
        return _float_strategy(c)
    if annotation is str:
        return _str_strategy(c)
    if annotation is bytes:
        return st.binary(max_size=32)
    if origin is list:
        return st.lists(from_annotation(args[0]), max_size=3)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(from_annotation(args[0]), max_size=3).map(tuple)
    if origin is tuple:
        return st.tuples(*(from_annotation(arg) for arg in args))
    if origin is dict:
        key, value = args
        return st.dictionaries(from_annotation(key), from_annotation(value), max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    msg = f"tests/strategies.py has no strategy for the annotation {annotation!r}"
    raise NotImplementedError(msg)


def _validated(cls: type[BaseModel], values: dict[str, Any]) -> BaseModel | None:
    try:
        return cls(**values)
    except ValidationError:
        return None


@functools.cache
def model_strategy(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Return a strategy for valid instances of a pydantic model, derived from its fields.

    Required fields are always drawn; fields with a default are sometimes left out, so the
    defaults are exercised too. A Message's ``kind`` is always left to its default.
    """
    override = MODEL_OVERRIDES.get(cls)
    if override is not None:
        return override()
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in cls.model_fields.items():
        if name == "kind" and issubclass(cls, Message):
            continue
        strategy = from_annotation(field.annotation, list(field.metadata))
        (required if field.is_required() else optional)[name] = strategy
    values = st.fixed_dictionaries(required, optional=optional)
    return values.map(functools.partial(_validated, cls)).filter(lambda m: m is not None)


def messages_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Instances of one Message class."""
    return typing.cast("st.SearchStrategy[Message]", model_strategy(cls))


def messages() -> st.SearchStrategy[Message]:
    """An instance of any registered Message class (resolved when first drawn from)."""
    return st.deferred(lambda: st.one_of(*(messages_of(cls) for cls in message_kinds().values())))


# --- Codec -----------------------------------------------------------------------------------

message_ids = st.integers(0, 2**63 - 1)
correlation_ids = st.none() | message_ids

#: Anything msgpack can pack (including values the codec must reject).
msgpack_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, 2**64 - 1),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
)

#: msgpack values whose maps have only text keys (what ``strict_map_key`` lets through).
msgpack_text_key_values: st.SearchStrategy[Any] = st.recursive(
    msgpack_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

#: msgpack values whose maps may have integer keys too (the codec rejects those frames).
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    msgpack_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4)
    ),
    max_leaves=12,
)


# --- Restart windows ----------------------------------------------------------------------

#: Multiples of 1/4: sums and differences are exact, so window edges are hit exactly.
quarters = st.integers(0, 40).map(lambda n: n / 4)
periods = st.integers(1, 40).map(lambda n: n / 4)
intensities = st.integers(0, 6)


@st.composite
def restart_times(draw: st.DrawFn, *, max_size: int = 25) -> list[float]:
    """Non-decreasing restart timestamps (several restarts may share a clock tick)."""
    start = draw(st.integers(0, 100)) / 4
    gaps = draw(st.lists(quarters, max_size=max_size))
    times: list[float] = []
    now = start
    for gap in gaps:
        now += gap
        times.append(now)
    return times


def restart_histories() -> st.SearchStrategy[tuple[float, ...]]:
    """A restart history as the supervisor keeps it: ascending timestamps."""
    return restart_times(max_size=10).map(tuple)


def unique_ids(min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[list[str]]:
    """Child ids in start order, all different."""
    return st.lists(child_ids, min_size=min_size, max_size=max_size, unique=True)


# --- Frames for the transport fuzzer (tests/integration/test_frame_fuzz.py) -------------------


class _Evil:
    """Pickles to a call of a function the restricted unpickler must never resolve."""

    def __init__(self, target: tuple[str, str], command: str) -> None:
        self.target = target
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import builtins
        import os

        if self.target == ("os", "system"):
            return (os.system, (self.command,))
        return (builtins.eval, (f"__import__('os').system({self.command!r})",))


def _pickles(command: str) -> st.SearchStrategy[bytes]:
    import pickle

    values: st.SearchStrategy[Any] = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )
    evil = st.sampled_from([("os", "system"), ("builtins", "eval")]).map(
        lambda target: _Evil(target, command)
    )
    return st.one_of(values, evil).map(lambda v: pickle.dumps(v, protocol=2))


def transport_frames(key: bytes, command: str) -> st.SearchStrategy[bytes]:
    """Bytes a hostile peer sends to a guarded Thespian TCP port: random bytes, bad length
    prefixes, truncated frames, valid tags over garbage or over pickles of the wrong shape
    (including pickles that would run the shell ``command``), several frames at once."""
    from actors.core.keyring import tag

    def frame(body: bytes) -> bytes:
        return b"%d>" % len(body) + body

    garbage = st.binary(min_size=0, max_size=300)
    bodies = st.one_of(garbage, _pickles(command))
    tagged = bodies.map(lambda b: frame(tag(key, b) + b))
    untagged = bodies.map(frame)
    wrong_tag = st.tuples(st.binary(min_size=32, max_size=32), bodies).map(
        lambda tb: frame(tb[0] + tb[1])
    )
    bad_prefix = st.tuples(
        st.sampled_from([b"-1>", b"abc>", b"99999999999999>", b">", b"1e9>", b"0>"]), garbage
    ).map(lambda pb: pb[0] + pb[1])
    truncated = st.tuples(tagged, st.integers(min_value=1, max_value=40)).map(
        lambda fk: fk[0][: max(1, len(fk[0]) - fk[1])]
    )
    one = st.one_of(garbage, tagged, untagged, wrong_tag, bad_prefix, truncated)
    return st.lists(one, min_size=1, max_size=3).map(b"".join)
