"""Purging modules, and proving that what was purged is gone.

After a reload, every class, function and module object of the purged modules must be
garbage: one that is still referenced (by a registry, a cache, a list in a base class) would
let a test see the old code. :func:`purge` removes modules and returns weak references to
those objects; :func:`provably_garbage` tries a quick proof on the small graph reachable from
them; :func:`stale_holders` runs a full collection and names what still holds a survivor.
"""

from __future__ import annotations

import gc
import importlib.util
import linecache
import os
import sys
import traceback
import types
import unittest
import weakref
from collections.abc import Iterable

from testserver.engine.loading import LoadError, LoadSpec, TestIndex
from testserver.hotreload.modulegraph import namespace_of

__all__ = [
    "forget_bytecode",
    "failed_index",
    "process_state",
    "provably_garbage",
    "purge",
    "release",
    "stale_holders",
]

MAX_HOLDER_SEARCH = 400
"""Objects visited when looking for what keeps a stale object alive (only to name it)."""

MAX_CLUSTER = 20_000
"""Objects the quick garbage proof may examine; a bigger purge takes a full collection."""

OWN_PACKAGE = "testserver."
"""Objects of testserver's own types are the reloader's bookkeeping, never project state."""


def purge(names: Iterable[str]) -> list[tuple[str, weakref.ref]]:
    """Remove ``names`` from ``sys.modules``; return weak references to what must die."""
    stale: list[tuple[str, weakref.ref]] = []
    for name in sorted(names, key=lambda n: n.count("."), reverse=True):
        module = sys.modules.pop(name, None)
        if module is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and getattr(parent, child, None) is module:
            delattr(parent, child)
        path = namespace_of(module).get("__file__")
        if isinstance(path, str):
            linecache.cache.pop(path, None)
        stale += _identity_refs(name, module)
    return stale


def _identity_refs(name: str, module: object) -> list[tuple[str, weakref.ref]]:
    refs = []
    try:
        refs.append((f"module {name}", weakref.ref(module)))
    except TypeError:
        return refs
    for value in list(namespace_of(module).values()):
        if isinstance(value, (type, types.FunctionType)) and value.__module__ == name:
            kind = "class" if isinstance(value, type) else "function"
            try:
                refs.append((f"{kind} {name}.{value.__qualname__}", weakref.ref(value)))
            except TypeError:
                pass
    return refs


def stale_holders(
    stale: list[tuple[str, weakref.ref]], unaffected: set[str]
) -> tuple[set[str], str | None]:
    """Collect garbage; return the unaffected project modules that hold stale objects, or
    why the server must restart (a holder outside the project, or not found)."""
    gc.unfreeze()
    gc.collect()
    alive = [(description, ref) for description, ref in stale if ref() is not None]
    alive.sort(key=lambda item: not item[0].startswith("module "))  # the likeliest holder first
    stale_ids = {id(ref()) for _, ref in alive}
    holders: set[str] = set()
    for description, ref in alive:
        obj = ref()
        if obj is None:
            continue
        found = _module_holder(obj) if isinstance(obj, types.ModuleType) else None
        owner, where = found if found is not None else _find_holder(obj, stale_ids)
        del obj
        if owner is None or owner not in unaffected:
            return holders, (
                f"after reloading, the old {description} is still referenced by {where}: "
                "restarting so that no test sees a stale object"
            )
        holders.add(owner)
    return holders, None


def provably_garbage(stale: list[tuple[str, weakref.ref]], purged: set[str]) -> bool:
    """True when nothing outside the objects reachable from the stale ones refers to them.

    The cyclic collector's method on a small graph: take every tracked object reachable
    from the stale ones, stopping at modules, classes and functions that were not purged
    and at module dictionaries that are still loaded; count the references each receives
    from inside that set; an object whose reference count is higher is held from outside,
    and so is everything it refers to. ``False`` means "not proven" (a full collection then
    decides), never "alive". CPython with a GIL only: elsewhere reference counts are not
    exact enough for this.
    """
    if sys.implementation.name != "cpython" or not getattr(sys, "_is_gil_enabled", _yes)():
        return False
    queue = [obj for _, ref in stale if (obj := ref()) is not None]
    if not queue:
        return True
    roots = {id(root) for root in queue}
    stops = {id(ns) for m in list(sys.modules.values()) if (ns := namespace_of(m))}
    cluster: dict[int, object] = {}
    while queue:
        obj = queue.pop()
        key = id(obj)
        if key in cluster or key in stops or not gc.is_tracked(obj):
            continue
        if key not in roots and isinstance(obj, types.ModuleType):
            continue  # another module: not ours to prove dead
        if (
            key not in roots
            and isinstance(obj, (type, types.FunctionType))
            and getattr(obj, "__module__", None) not in purged
        ):
            continue  # someone else's class or function
        if type(obj).__module__.startswith(OWN_PACKAGE):
            continue  # our bookkeeping (the tracker a wrapped loader points to): held by us
        cluster[key] = obj
        if len(cluster) > MAX_CLUSTER:
            return False
        queue.extend(gc.get_referents(obj))
    del obj
    probe: list[object] = []
    cluster[id(probe)] = probe
    counts = {key: sys.getrefcount(value) for key, value in cluster.items()}
    overhead = counts[id(probe)] - 1  # the probe's only other reference: the name `probe`
    inside = dict.fromkeys(cluster, 0)
    for value in cluster.values():
        for referent in gc.get_referents(value):
            if id(referent) in inside:
                inside[id(referent)] += 1
    held = [key for key in cluster if counts[key] - overhead > inside[key] and key != id(probe)]
    if any(counts[key] - overhead < inside[key] for key in cluster):
        return False  # the accounting does not add up: prove nothing
    alive: set[int] = set()
    while held:
        key = held.pop()
        if key not in alive:
            alive.add(key)
            held.extend(id(r) for r in gc.get_referents(cluster[key]) if id(r) in cluster)
    return not any(id(ref()) in alive for _, ref in stale if ref() is not None)


def _yes() -> bool:
    return True


def _find_holder(obj: object, stale_ids: set[int]) -> tuple[str | None, str]:
    """The module whose global (or whose class) keeps ``obj`` alive, and a description.

    A breadth-first walk up ``gc.get_referrers``, skipping frames, the walk's own lists and
    the stale objects themselves (a stale class refers to itself through its methods).
    """
    module_dicts = {id(ns): n for n, m in list(sys.modules.items()) if (ns := namespace_of(m))}
    frontier: list[object] = [obj]
    seen = {id(obj), id(frontier)} | stale_ids
    visited = 0
    while frontier and visited < MAX_HOLDER_SEARCH:
        following: list[object] = []
        seen.add(id(following))
        for item in frontier:
            referrers = gc.get_referrers(item)
            seen.add(id(referrers))
            for referrer in referrers:
                if id(referrer) in seen or isinstance(referrer, types.FrameType):
                    continue
                seen.add(id(referrer))
                visited += 1
                name = module_dicts.get(id(referrer))
                if name is not None:
                    return name, f"a global of module {name}"
                if isinstance(referrer, type):
                    owner = referrer.__module__
                    return owner, f"class {owner}.{referrer.__qualname__}"
                following.append(referrer)
            del referrers
        frontier = following
    return None, "an object outside the project's modules (or C code)"


def _module_holder(module: types.ModuleType) -> tuple[str, str] | None:
    """The loaded module that keeps a purged module object as a global (``import fixtures``
    in an installed library), found directly: a walk up from the module's classes would
    visit every function of the module first."""
    for name, loaded in list(sys.modules.items()):
        if loaded is module:
            return None  # still loaded: not a purged module
        for key, value in list(namespace_of(loaded).items()):
            if value is module:
                return name, f"the global {key!r} of module {name}"
    return None


def process_state() -> tuple[object, ...]:
    return (
        tuple(sys.path),
        tuple(map(id, sys.meta_path)),
        tuple(map(id, sys.path_hooks)),
        dict(os.environ),
    )


def release(index: TestIndex) -> None:
    """Drop the old index's tests so their classes can be collected (the server swaps)."""
    index.tests = ()
    index._by_id = {}
    index.ids = ()
    index.errors = ()


def forget_bytecode(path: str) -> None:
    """Delete the cached bytecode of ``path`` (validated by mtime seconds: unsafe)."""
    if not path.endswith(".py"):
        return
    for optimization in ("", 1, 2):
        try:
            os.unlink(importlib.util.cache_from_source(path, optimization=optimization))
        except (OSError, NotImplementedError, ValueError):
            pass


def failed_index(spec: LoadSpec, error: BaseException) -> TestIndex:
    """An index holding one failing test that reports why discovery itself failed."""
    name = spec.start if spec.discover else ",".join(spec.names)
    failed = unittest.loader._FailedTest(name, error)  # type: ignore[attr-defined]
    text = "".join(traceback.format_exception(error))
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    return TestIndex([(failed.id(), failed)], [LoadError(failed.id(), name, message, text)])
