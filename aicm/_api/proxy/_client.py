"""The tracked proxy of a client, its resources and methods (see the package docstring)."""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine
from typing import Any

from ..._core.exceptions import UsageLimitExceeded
from ._base import Delegate, ProxyBase, unwrap
from ._hooks import Call, ExtractorHook, logger, should_track
from ._responses import after_raw_acall, after_raw_call
from ._streams import after_call

__all__ = ["TrackedProxy"]

# Values handed back as they are: data, classes and modules hold no tracked methods, and a
# proxy around a str or int would break code that checks ``type(x) is str``.
_PASSTHROUGH_TYPES = frozenset(
    {str, bytes, bytearray, int, float, complex, bool, type(None), list, tuple, dict, set}
)
_PASSTHROUGH_BASES = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    list,
    tuple,
    dict,
    set,
    frozenset,
    type,
    types.ModuleType,
)
_FUNCTION_TYPES = frozenset(
    {types.MethodType, types.FunctionType, types.BuiltinMethodType, types.MethodWrapperType}
)
# Client methods that return a new client of the same SDK (``client.with_options(timeout=5)``,
# ``client.copy()``): what they return is wrapped by the same hook.
_CLIENT_FACTORIES = frozenset({"with_options", "copy"})
# SDK namespaces that make the same calls but hand back the HTTP response: ``raw`` reads the
# body at once (``with_raw_response``), ``streaming`` when asked (``with_streaming_response``).
# They add nothing to the call's path: ``chat.completions.with_raw_response.create`` is
# tracked as ``chat.completions.create``, from the body the response parses to.
_RAW_NAMESPACES = {"with_raw_response": "raw", "with_streaming_response": "streaming"}

_get = object.__getattribute__


class TrackedProxy(ProxyBase):
    """Wrap ``target`` so that tracked calls reach ``extractor_hook``; all else is ``target``'s.

    ``path`` is the dotted path of ``target`` itself (``""`` for a client). ``mode`` is set
    below ``with_raw_response`` (``"raw"``) and ``with_streaming_response`` (``"streaming"``):
    calls there return HTTP responses, tracked from the body they parse to.
    """

    __slots__ = (
        "__weakref__",
        "_aicm_begin",
        "_aicm_children",
        "_aicm_hook",
        "_aicm_mode",
        "_aicm_path",
    )

    _aicm_hook: ExtractorHook
    _aicm_begin: Callable[[Call], bool] | None
    _aicm_path: str
    _aicm_mode: str | None
    _aicm_children: dict[str, TrackedProxy]

    def __new__(cls, target: Any, **_: Any) -> TrackedProxy:
        # Only a callable target gets __call__: callable(proxy) says what callable(target) does.
        if cls is TrackedProxy and callable(target):
            cls = _TrackedCallable
        return object.__new__(cls)

    def __init__(
        self,
        target: Any,
        *,
        extractor_hook: ExtractorHook,
        path: str = "",
        mode: str | None = None,
    ) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_hook", extractor_hook)
        object.__setattr__(self, "_aicm_begin", getattr(extractor_hook, "begin_call", None))
        object.__setattr__(self, "_aicm_path", path)
        object.__setattr__(self, "_aicm_mode", mode)
        object.__setattr__(self, "_aicm_children", {})

    # -- attribute access: the hot path for untracked use ---------------------------------

    def __getattribute__(self, name: str) -> Any:
        # Overriding __getattribute__ (not __getattr__) skips the failed normal lookup that
        # precedes every __getattr__ call, halving the cost of each attribute hop.
        if name in _PROXY_NAMES:
            return _get(self, name)
        value = getattr(_get(self, "_aicm_target"), name)
        children: dict[str, TrackedProxy] = _get(self, "_aicm_children")
        child = children.get(name)
        vtype = type(value)
        if child is not None:
            cached = _get(child, "_aicm_target")
            # Bound methods are new objects on each access but equal while they wrap the
            # same function and instance; anything else must be the very same object, so
            # a replaced attribute is never served from a stale cache (a child is never
            # made of a passthrough value, so the very same object is never one).
            if cached is value or (vtype is types.MethodType and cached == value):
                return child
        if vtype in _PASSTHROUGH_TYPES:
            return value
        hook: ExtractorHook = _get(self, "_aicm_hook")
        own_path: str = _get(self, "_aicm_path")
        path = f"{own_path}.{name}" if own_path else name
        if vtype in _FUNCTION_TYPES:
            # A function has nothing tracked below it: when it is not tracked itself the
            # caller gets it bare, with no proxy in the call. Asked on every access, so a
            # refreshed config that starts tracking it takes effect at once.
            if not should_track(hook, path):
                if name in _CLIENT_FACTORIES:
                    return _ClientFactory(value, hook, own_path, _get(self, "_aicm_mode"))
                return value
        elif name.startswith("__") or isinstance(value, _PASSTHROUGH_BASES):
            return value
        mode: str | None = _get(self, "_aicm_mode")
        if name in _RAW_NAMESPACES:
            path, mode = own_path, _RAW_NAMESPACES[name]
        child = TrackedProxy(value, extractor_hook=hook, path=path, mode=mode)
        children[name] = child
        return child

    def __str__(self) -> str:
        return str(self._aicm_target)

    def __format__(self, spec: str) -> str:
        return format(self._aicm_target, spec)

    def __bool__(self) -> bool:
        return bool(self._aicm_target)

    def __eq__(self, other: object) -> bool:
        return bool(self._aicm_target == unwrap(other))

    def __ne__(self, other: object) -> bool:
        return bool(self._aicm_target != unwrap(other))

    def __lt__(self, other: object) -> Any:
        return self._aicm_target < unwrap(other)

    def __le__(self, other: object) -> Any:
        return self._aicm_target <= unwrap(other)

    def __gt__(self, other: object) -> Any:
        return self._aicm_target > unwrap(other)

    def __ge__(self, other: object) -> Any:
        return self._aicm_target >= unwrap(other)

    def __hash__(self) -> int:
        return hash(self._aicm_target)

    def __len__(self) -> int:
        return len(self._aicm_target)

    def __iter__(self) -> Any:
        return iter(self._aicm_target)

    def __contains__(self, item: object) -> bool:
        return item in self._aicm_target

    def __getitem__(self, key: Any) -> Any:
        return self._aicm_target[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._aicm_target[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._aicm_target[key]

    # A client entered with ``with``/``async with`` usually returns itself; the caller then
    # holds the proxy, so calls inside the block are still tracked.
    def __enter__(self) -> Any:
        entered = self._aicm_target.__enter__()
        return self if entered is self._aicm_target else entered

    def __exit__(self, *exc_info: Any) -> Any:
        return self._aicm_target.__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        entered = await self._aicm_target.__aenter__()
        return self if entered is self._aicm_target else entered

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._aicm_target.__aexit__(*exc_info)


class _TrackedCallable(TrackedProxy):
    """A proxy of something callable: a method, a function, a callable resource."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        func = _get(self, "_aicm_target")
        hook: ExtractorHook = _get(self, "_aicm_hook")
        path: str = _get(self, "_aicm_path")
        # A tracked call begins here: anything that must happen before the provider is
        # called (path, arguments and the hook are all known) belongs right here.
        call = Call(hook, path, args, kwargs, func)
        begin = _get(self, "_aicm_begin")
        try:  # one question per call: begin_call (tracked, within usage limits) or should_track
            tracked = begin(call) if begin is not None else hook.should_track(path)
        except UsageLimitExceeded:
            raise  # refuses the call before it costs
        except Exception:
            asked = "begin_call" if begin is not None else "should_track"
            logger.exception("%s(%r) failed; call not tracked", asked, path)
            tracked = False
        if not tracked:
            return func(*args, **kwargs)
        result = func(*args, **kwargs)
        rtype = type(result)
        if rtype in _PASSTHROUGH_TYPES:
            call.report(result)
            return result
        mode: str | None = _get(self, "_aicm_mode")
        if rtype is types.CoroutineType:
            return _await_then_report(result, call, mode)
        if mode is not None:
            return after_raw_call(call, result, mode)
        return after_call(call, result)


async def _await_then_report(coro: Coroutine[Any, Any, Any], call: Call, mode: str | None) -> Any:
    result = await coro
    if mode is not None:
        return await after_raw_acall(call, result, mode)
    return after_call(call, result)


class _ClientFactory(Delegate):
    """``client.with_options``/``client.copy``: the client they return is tracked alike."""

    __slots__ = ("_aicm_hook", "_aicm_mode", "_aicm_path")

    def __init__(self, target: Any, hook: ExtractorHook, path: str, mode: str | None) -> None:
        super().__init__(target)
        self._aicm_hook = hook
        self._aicm_path = path
        self._aicm_mode = mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self._aicm_target(*args, **kwargs)
        if not _same_package(result, self._aicm_target):
            return result
        return TrackedProxy(
            result, extractor_hook=self._aicm_hook, path=self._aicm_path, mode=self._aicm_mode
        )


def _same_package(result: Any, method: Any) -> bool:
    """True when ``result`` is an object (not data) of the package that defined ``method``."""
    rtype = type(result)
    if (
        rtype in _PASSTHROUGH_TYPES
        or isinstance(result, _PASSTHROUGH_BASES)
        or hasattr(rtype, "model_dump")  # a pydantic model is data, not a client
    ):
        return False
    owner = getattr(method, "__self__", None)
    home = type(owner).__module__ if owner is not None else getattr(method, "__module__", None)
    if not isinstance(home, str):
        return False
    return rtype.__module__.partition(".")[0] == home.partition(".")[0]


# Names the proxy answers itself; every other name goes to the target. ``__doc__`` and
# ``__module__`` are the target's, as on functools.wraps-style wrappers.
_PROXY_NAMES = frozenset(dir(_TrackedCallable)) - {"__doc__", "__module__", "__annotations__"}
