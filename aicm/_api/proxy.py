"""A transparent proxy that reports the tracked calls and streams of any client (layer 4 helper).

``TrackedProxy(client, extractor_hook=hook)`` behaves like ``client``: attributes, nested
resources, sync and async methods, context managers, ``isinstance``. It remembers the
dotted path of each attribute access; when a called path is tracked (``hook.should_track``)
it hands the call and its response to ``hook.on_call`` once the call has returned (or its
coroutine has been awaited). A streaming result is handed back wrapped: every chunk passes
through untouched and ``hook.on_stream_end`` runs exactly once when the stream is
exhausted, closed, left by ``with``/``async with``, fails, or is garbage-collected, even
before its first chunk (the request was made: ``chunks`` is then empty). A helper stream's
``get_final_*``/``until_done`` read the rest through the wrapper first. A hook may also
have ``before_call(path, args, kwargs)``, run before a tracked call is made; the
:class:`~aicm.UsageLimitExceeded` it raises refuses the call.

What the client hands out stays tracked by the same hook: the clients ``with_options`` and
``copy`` return, and the ``with_raw_response``/``with_streaming_response`` namespaces, whose
calls keep the plain path (``chat.completions.create``) and are reported once, from the
body the HTTP response parses to; a streamed body read past the SDK's parser (raw lines or
bytes) is reported as a stream that ended before its first chunk.

The hooks run in the caller's thread or task and must be quick; any exception they raise
is logged on ``aicm.cost_manager`` and swallowed, so tracking never breaks the user's call.
No delivery happens here.
"""

from __future__ import annotations

import inspect
import logging
import types
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import attrs

from .._core.exceptions import UsageLimitExceeded

__all__ = ["ExtractorHook", "ProxyHooks", "TrackedProxy", "track_stream"]

logger = logging.getLogger("aicm.cost_manager")


class ExtractorHook(Protocol):
    """What a :class:`TrackedProxy` asks and tells about calls (the CostManager implements it)."""

    def should_track(self, path: str) -> bool:
        """True when calls of the dotted ``path`` (``chat.completions.create``) are tracked."""
        ...

    def on_call(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        response: Any,
        func: Callable[..., Any],
    ) -> None:
        """A tracked call returned ``response`` (not a stream)."""
        ...

    def on_stream_end(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chunks: list[Any],
        func: Callable[..., Any],
    ) -> None:
        """A tracked call's stream ended; ``chunks`` is everything it yielded.

        For SDK helper streams that accumulate a final snapshot (anthropic
        ``MessageStream.current_message_snapshot``, openai
        ``ChatCompletionStream.current_completion_snapshot``) the snapshot is appended as
        the last chunk, so usage is known even when the user read ``text_stream`` or
        called ``get_final_message()`` instead of iterating the stream itself.
        """
        ...


OnCall = Callable[[str, tuple[Any, ...], dict[str, Any], Any, Callable[..., Any]], None]
OnStreamEnd = Callable[[str, tuple[Any, ...], dict[str, Any], list[Any], Callable[..., Any]], None]


def _never(path: str) -> bool:
    return False


def _ignore_call(*_: Any) -> None:
    return None


@attrs.frozen(kw_only=True)
class ProxyHooks:
    """An :class:`ExtractorHook` made of three plain callables."""

    should_track: Callable[[str], bool] = _never
    on_call: OnCall = _ignore_call
    on_stream_end: OnStreamEnd = _ignore_call


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
# Results that are answers, never streams, even with ``stream=True``.
_NOT_STREAMS = (str, bytes, bytearray, int, float, list, tuple, dict, set, frozenset)
# Accumulated snapshots kept by SDK helper streams (anthropic, openai).
_SNAPSHOT_ATTRS = ("current_message_snapshot", "current_completion_snapshot")
_OWN = frozenset(
    {
        "_aicm_target",
        "_aicm_hook",
        "_aicm_path",
        "_aicm_children",
        "_aicm_state",
        "_aicm_next",
        "_aicm_stream",
        "_aicm_mode",
    }
)
# Client methods that return a new client of the same SDK (``client.with_options(timeout=5)``,
# ``client.copy()``): what they return is wrapped by the same hook.
_CLIENT_FACTORIES = frozenset({"with_options", "copy"})
# SDK namespaces that make the same calls but hand back the HTTP response: ``raw`` reads the
# body at once (``with_raw_response``), ``streaming`` when asked (``with_streaming_response``).
# They add nothing to the call's path: ``chat.completions.with_raw_response.create`` is
# tracked as ``chat.completions.create``, from the body the response parses to.
_RAW_NAMESPACES = {"with_raw_response": "raw", "with_streaming_response": "streaming"}
# Helper-stream methods that read the stream to its end themselves: run through the wrapper
# first, so the record is made from every event, then answered by the SDK's own method.
_DRAINING = frozenset(
    {
        "until_done",
        "get_final_completion",
        "get_final_response",
        "get_final_message",
        "get_final_text",
    }
)


_get = object.__getattribute__


def _unwrap(value: Any) -> Any:
    if isinstance(value, (TrackedProxy, _TrackedStream, _StreamManager)):
        return object.__getattribute__(value, "_aicm_target")
    return value


class TrackedProxy:
    """Wrap ``target`` so that tracked calls reach ``extractor_hook``; all else is ``target``'s.

    ``path`` is the dotted path of ``target`` itself (``""`` for a client). ``mode`` is set
    below ``with_raw_response`` (``"raw"``) and ``with_streaming_response`` (``"streaming"``):
    calls there return HTTP responses, tracked from the body they parse to.
    """

    __slots__ = (
        "__weakref__",
        "_aicm_children",
        "_aicm_hook",
        "_aicm_mode",
        "_aicm_path",
        "_aicm_target",
    )

    _aicm_target: Any
    _aicm_hook: ExtractorHook
    _aicm_path: str
    _aicm_mode: str | None
    _aicm_children: dict[str, TrackedProxy]

    def __new__(
        cls,
        target: Any,
        *,
        extractor_hook: ExtractorHook,
        path: str = "",
        mode: str | None = None,
    ) -> TrackedProxy:
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
        vtype = type(value)
        if vtype in _PASSTHROUGH_TYPES:
            return value
        children: dict[str, TrackedProxy] = _get(self, "_aicm_children")
        child = children.get(name)
        if child is not None:
            cached = _get(child, "_aicm_target")
            # Bound methods are new objects on each access but equal while they wrap the
            # same function and instance; anything else must be the very same object, so
            # a replaced attribute is never served from a stale cache.
            if cached is value or (vtype is types.MethodType and cached == value):
                return child
        hook: ExtractorHook = _get(self, "_aicm_hook")
        own_path: str = _get(self, "_aicm_path")
        path = f"{own_path}.{name}" if own_path else name
        if vtype in _FUNCTION_TYPES:
            # A function has nothing tracked below it: when it is not tracked itself the
            # caller gets it bare, with no proxy in the call. Asked on every access, so a
            # refreshed config that starts tracking it takes effect at once.
            if not _should_track(hook, path):
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

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._aicm_target, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _OWN:
            object.__delattr__(self, name)
        else:
            delattr(self._aicm_target, name)

    @property
    def __class__(self) -> type[Any]:  # isinstance() sees the target's class
        return type(self._aicm_target)

    @__class__.setter
    def __class__(self, value: type[Any]) -> None:
        self._aicm_target.__class__ = value

    @property
    def __wrapped__(self) -> Any:
        return self._aicm_target

    def __dir__(self) -> list[str]:
        return dir(self._aicm_target)

    def __repr__(self) -> str:
        return repr(self._aicm_target)

    def __str__(self) -> str:
        return str(self._aicm_target)

    def __format__(self, spec: str) -> str:
        return format(self._aicm_target, spec)

    def __bool__(self) -> bool:
        return bool(self._aicm_target)

    def __eq__(self, other: object) -> bool:
        return bool(self._aicm_target == _unwrap(other))

    def __ne__(self, other: object) -> bool:
        return bool(self._aicm_target != _unwrap(other))

    def __lt__(self, other: object) -> Any:
        return self._aicm_target < _unwrap(other)

    def __le__(self, other: object) -> Any:
        return self._aicm_target <= _unwrap(other)

    def __gt__(self, other: object) -> Any:
        return self._aicm_target > _unwrap(other)

    def __ge__(self, other: object) -> Any:
        return self._aicm_target >= _unwrap(other)

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
        if not _should_track(hook, path):
            return func(*args, **kwargs)
        # A tracked call begins here: anything that must happen before the provider is
        # called (path, arguments and the hook are all known) belongs right here.
        _before_call(hook, path, args, kwargs)  # a usage limit refuses the call before it costs
        result = func(*args, **kwargs)
        rtype = type(result)
        if rtype in _PASSTHROUGH_TYPES:
            _report_call(hook, path, args, kwargs, result, func)
            return result
        mode: str | None = _get(self, "_aicm_mode")
        if rtype is types.CoroutineType:
            return _await_then_report(result, hook, path, args, kwargs, func, mode)
        if mode is not None:
            return _after_raw_call(hook, path, args, kwargs, result, func, mode)
        return _after_call(hook, path, args, kwargs, result, func)


class _Delegate:
    """Base of the wrappers below: everything but what they intercept is the target's."""

    __slots__ = ("_aicm_target",)

    _aicm_target: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_aicm_"):
            raise AttributeError(name)
        return getattr(self._aicm_target, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:  # isinstance() sees the target's class
        return type(self._aicm_target)

    @property
    def __wrapped__(self) -> Any:
        return self._aicm_target

    def __dir__(self) -> list[str]:
        return dir(self._aicm_target)

    def __repr__(self) -> str:
        return repr(self._aicm_target)


class _ClientFactory(_Delegate):
    """``client.with_options``/``client.copy``: the client they return is tracked alike."""

    __slots__ = ("_aicm_hook", "_aicm_mode", "_aicm_path")

    def __init__(self, target: Any, hook: ExtractorHook, path: str, mode: str | None) -> None:
        self._aicm_target = target
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


def _before_call(
    hook: ExtractorHook, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    before = getattr(hook, "before_call", None)
    if before is None:
        return
    try:
        before(path, args, kwargs)
    except UsageLimitExceeded:
        raise
    except Exception:
        logger.exception("checking usage limits for %s failed; the call is made", path)


def _should_track(hook: ExtractorHook, path: str) -> bool:
    try:
        return hook.should_track(path)
    except Exception:
        logger.exception("should_track(%r) failed; call not tracked", path)
        return False


async def _await_then_report(
    coro: Coroutine[Any, Any, Any],
    hook: ExtractorHook,
    path: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    func: Callable[..., Any],
    mode: str | None,
) -> Any:
    result = await coro
    if mode is not None:
        return await _after_raw_acall(hook, path, args, kwargs, result, func, mode)
    return _after_call(hook, path, args, kwargs, result, func)


def _after_call(
    hook: ExtractorHook,
    path: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    func: Callable[..., Any],
) -> Any:
    wrapped = _wrap_stream(hook, path, args, kwargs, result, func)
    if wrapped is not None:
        return wrapped
    _report_call(hook, path, args, kwargs, result, func)
    return result


def _report_call(
    hook: ExtractorHook,
    path: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    func: Callable[..., Any],
) -> None:
    try:
        hook.on_call(path, args, kwargs, result, func)
    except Exception:
        logger.exception("tracking %s failed; the call's result is returned untouched", path)


def _is_stream_request(path: str, kwargs: dict[str, Any]) -> bool:
    flag = kwargs.get("stream")
    return flag is True or (flag is None and path.rpartition(".")[2] == "stream")


_Call = tuple[ExtractorHook, str, tuple[Any, ...], dict[str, Any], Callable[..., Any]]


def _after_raw_call(
    hook: ExtractorHook,
    path: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    func: Callable[..., Any],
    mode: str,
) -> Any:
    """A call under ``with_raw_response``/``with_streaming_response`` returned ``result``."""
    call: _Call = (hook, path, args, kwargs, func)
    rtype = type(result)
    if mode == "streaming":
        if hasattr(rtype, "__enter__"):
            return _SyncResponseCM(result, call)
        if hasattr(rtype, "__aenter__"):
            return _AsyncResponseCM(result, call)
    elif hasattr(rtype, "parse"):
        tracked = _ParsedResponse(result, call)
        if _is_stream_request(path, kwargs):
            tracked._aicm_report_if_never_parsed()
            return tracked  # the stream is wrapped when the caller parses it
        # The body is already read: track it now, so a caller who only reads headers is
        # still billed. The SDK caches what parse() returns, so the caller's own parse()
        # later gives the very same object.
        try:
            parsed = result.parse()
        except Exception:
            logger.warning("%s: the raw response did not parse; call not tracked", path)
            return result
        if type(parsed) is types.CoroutineType:
            parsed.close()  # an async parse from a sync call: track when the caller parses
            return tracked
        tracked._aicm_take(parsed)
        return result
    return _after_call(hook, path, args, kwargs, result, func)


async def _after_raw_acall(
    hook: ExtractorHook,
    path: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    func: Callable[..., Any],
    mode: str,
) -> Any:
    """An awaited call under ``with_raw_response`` returned ``result`` (see _after_raw_call)."""
    if mode == "raw" and not _is_stream_request(path, kwargs):
        parse = getattr(result, "parse", None)
        if parse is not None and inspect.iscoroutinefunction(parse):
            tracked = _ParsedResponse(result, (hook, path, args, kwargs, func))
            try:
                tracked._aicm_take(await parse())
            except Exception:
                logger.warning("%s: the raw response did not parse; call not tracked", path)
            return result
    return _after_raw_call(hook, path, args, kwargs, result, func, mode)


_UNPARSED: Any = object()


class _ParsedResponse(_Delegate):
    """An SDK HTTP response of a tracked call: tracked from the body it parses to, once."""

    __slots__ = ("__weakref__", "_aicm_call", "_aicm_parsed", "_aicm_unread")

    def __init__(self, target: Any, call: _Call) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_call", call)
        object.__setattr__(self, "_aicm_parsed", _UNPARSED)
        object.__setattr__(self, "_aicm_unread", [])

    def _aicm_report_if_never_parsed(self) -> None:
        """Record the call from its request alone if this response is dropped unparsed."""
        unread: list[_Call] = self._aicm_unread
        unread.append(self._aicm_call)
        weakref.finalize(self, _never_parsed, unread).atexit = False

    def __getattr__(self, name: str) -> Any:
        value = _Delegate.__getattr__(self, name)
        if name != "parse" or not callable(value):
            return value

        def parse(*args: Any, **kwargs: Any) -> Any:
            parsed = value(*args, **kwargs)
            if type(parsed) is types.CoroutineType:
                return self._aicm_await(parsed)
            return self._aicm_take(parsed)

        return parse

    async def _aicm_await(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self._aicm_take(await coro)

    @property
    def _aicm_was_parsed(self) -> bool:
        return self._aicm_parsed is not _UNPARSED

    def _aicm_take(self, parsed: Any) -> Any:
        """Track the first body parsed; hand back what the caller gets for ``parsed``."""
        first = self._aicm_parsed
        if first is not _UNPARSED:
            seen, given = first
            return given if seen is parsed else parsed
        hook, path, args, kwargs, func = self._aicm_call
        self._aicm_unread.clear()
        given = _after_call(hook, path, args, kwargs, parsed, func)
        object.__setattr__(self, "_aicm_parsed", (parsed, given))
        return given


def _never_parsed(unread: list[_Call]) -> None:
    for call in unread:
        _report_unparsed_stream(call)


def _report_unparsed_stream(call: _Call) -> None:
    """A streamed response whose events never reached the SDK's parser (read as raw lines or
    bytes, or never read): the request was made and billed, so it is recorded from the
    request alone, with no usage."""
    hook, path, args, kwargs, func = call
    logger.warning(
        "%s: a streamed response was not read through parse(); recorded from the request "
        "alone, with no usage",
        path,
    )
    _StreamState(hook, path, args, kwargs, func, None).finish()


class _ResponseCM(_Delegate):
    """``with_streaming_response``: the response entered is tracked when parsed, or on exit."""

    __slots__ = ("_aicm_call", "_aicm_response")

    def __init__(self, target: Any, call: _Call) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_call", call)
        object.__setattr__(self, "_aicm_response", None)

    def _aicm_entered(self, entered: Any) -> Any:
        if not hasattr(type(entered), "parse"):
            return entered
        response = _ParsedResponse(entered, self._aicm_call)
        object.__setattr__(self, "_aicm_response", response)
        return response

    def _aicm_unparsed(self) -> _ParsedResponse | None:
        """The entered response when it still has to be parsed for its record."""
        response: _ParsedResponse | None = self._aicm_response
        if response is None or response._aicm_was_parsed:
            return None
        _, path, _, kwargs, _ = self._aicm_call
        if _is_stream_request(path, kwargs):
            # A stream read as raw lines or bytes: its events never reached the SDK's parser.
            # A parse() after this (of a closed response) is not recorded a second time.
            object.__setattr__(response, "_aicm_parsed", (None, None))
            _report_unparsed_stream(self._aicm_call)
            return None
        # The caller read the body some other way (json(), text()) or not at all: the call
        # was billed all the same, so it is parsed for the record.
        return response

    def _aicm_parse_failed(self) -> None:
        logger.warning("%s: the response body did not parse; not tracked", self._aicm_call[1])


class _SyncResponseCM(_ResponseCM):
    __slots__ = ()

    def __enter__(self) -> Any:
        return self._aicm_entered(self._aicm_target.__enter__())

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            response = self._aicm_unparsed()
            if response is not None:
                try:
                    response.parse()
                except Exception:
                    self._aicm_parse_failed()
        finally:
            exited = self._aicm_target.__exit__(*exc_info)
        return exited


class _AsyncResponseCM(_ResponseCM):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        return self._aicm_entered(await self._aicm_target.__aenter__())

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            response = self._aicm_unparsed()
            if response is not None:
                try:
                    await response.parse()
                except Exception:
                    self._aicm_parse_failed()
        finally:
            exited = await self._aicm_target.__aexit__(*exc_info)
        return exited


def _wrap_stream(
    hook: ExtractorHook,
    path: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    func: Callable[..., Any],
) -> Any:
    """A pass-through wrapper when ``result`` is a stream, else None."""
    kind = _stream_kind(result, path, kwargs)
    if kind is None:
        return None
    state = _StreamState(hook, path, args, kwargs, func, result)
    if kind == "manager":
        return _SyncStreamManager(result, state)
    if kind == "amanager":
        return _AsyncStreamManager(result, state)
    return _stream_class(type(result), kind == "async")(result, state)


def track_stream(
    hook: ExtractorHook,
    path: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    stream: Any,
    func: Callable[..., Any],
    *,
    first: tuple[Any, ...] = (),
) -> Any:
    """Wrap a stream found inside a call's answer (boto3's ``converse_stream`` returns it in a
    dict), tracked as any other: ``hook.on_stream_end`` sees ``first``, then every event."""
    state = _StreamState(hook, path, args, kwargs, func, stream)
    state.chunks.extend(first)
    rtype = type(stream)
    return _stream_class(rtype, _iteration(rtype) == "async")(stream, state)


def _stream_kind(result: Any, path: str, kwargs: dict[str, Any]) -> str | None:
    """``"sync"``/``"async"`` for a stream, ``"manager"``/``"amanager"`` for a helper."""
    rtype = type(result)
    kind = _TYPE_KINDS.get(rtype, "unseen")
    if kind == "unseen":
        kind = _type_kind(rtype)
        if len(_TYPE_KINDS) >= 1024:
            _TYPE_KINDS.clear()
        _TYPE_KINDS[rtype] = kind
    if kind != "maybe":
        return kind
    if not _is_stream_request(path, kwargs):
        return None
    # Helper managers (``client.messages.stream(...)``) are context managers that are not
    # iterable themselves: the request starts when they are entered.
    if hasattr(rtype, "__enter__") and not hasattr(rtype, "__iter__"):
        return "manager"
    if hasattr(rtype, "__aenter__") and not hasattr(rtype, "__aiter__"):
        return "amanager"
    return _iteration(rtype)


def _iteration(rtype: type[Any]) -> str | None:
    """``"sync"`` for an iterable type, ``"async"`` for an async-only one, else None."""
    if hasattr(rtype, "__iter__"):
        return "sync"
    if hasattr(rtype, "__aiter__"):
        return "async"
    return None


def _type_kind(rtype: type[Any]) -> str | None:
    """What a result's type alone says: an answer (None), a stream, or "maybe"."""
    if rtype is type(None) or issubclass(rtype, _NOT_STREAMS):
        return None
    if hasattr(rtype, "model_dump"):  # a pydantic model is an answer even though iterable
        return None
    if hasattr(rtype, "__next__"):
        return "sync"
    if hasattr(rtype, "__anext__"):
        return "async"
    return "maybe"


_TYPE_KINDS: dict[type[Any], str | None] = {}


class _StreamState:
    """The record of one stream; kept apart from the wrapper so a finalizer can hold it."""

    __slots__ = ("_pending", "args", "chunks", "func", "hook", "kwargs", "path", "target")

    def __init__(
        self,
        hook: ExtractorHook,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        func: Callable[..., Any],
        target: Any,
    ) -> None:
        self.hook = hook
        self.path = path
        self.args = args
        self.kwargs = kwargs
        self.func = func
        self.target: Any = target
        self.chunks: list[Any] = []
        self._pending = [True]

    def finish(self) -> None:
        """Report the stream once; later calls do nothing."""
        try:
            # list.pop is atomic, so two threads closing at once still report once.
            self._pending.pop()
        except IndexError:
            return
        chunks = self.chunks
        snapshot = _snapshot(self.target)
        if snapshot is not None:
            chunks.append(snapshot)
        self.target = None
        try:
            self.hook.on_stream_end(self.path, self.args, self.kwargs, chunks, self.func)
        except Exception:
            logger.exception("tracking the stream of %s failed", self.path)


def _snapshot(target: Any) -> Any:
    if target is None:
        return None
    rtype = type(target)
    for name in _SNAPSHOT_ATTRS:
        if hasattr(rtype, name):
            try:
                value = getattr(target, name)
            except Exception:  # the SDKs assert a snapshot exists; before any chunk it does not
                continue
            if value is not None:
                return value
    return None


class _TrackedStream(_Delegate):
    """Base of the stream wrappers: the chunks seen, the drain and close hooks, the finalizer."""

    __slots__ = ("__weakref__", "_aicm_next", "_aicm_state")

    _aicm_state: _StreamState
    _aicm_next: Any

    def __init__(self, target: Any, state: _StreamState) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_state", state)
        object.__setattr__(self, "_aicm_next", None)
        # A stream abandoned mid-way (``break``, then dropped) is reported when collected.
        weakref.finalize(self, state.finish).atexit = False

    def __getattr__(self, name: str) -> Any:
        value = _Delegate.__getattr__(self, name)
        if name in _DRAINING and callable(value):
            return self._aicm_drain_then(value)
        if name in ("close", "aclose") and callable(value):
            state = self._aicm_state

            def close(*args: Any, **kwargs: Any) -> Any:
                try:
                    return value(*args, **kwargs)
                finally:
                    # After close nothing more can arrive, so reporting before an async
                    # close has been awaited loses nothing.
                    state.finish()

            return close
        return value

    def _aicm_drain_then(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` (``get_final_response``...) run once the wrapper has read every event."""
        target = self._aicm_target

        if isinstance(self, _AsyncStream):

            async def drained_async(*args: Any, **kwargs: Any) -> Any:
                async for _ in self:
                    pass
                result = await method(*args, **kwargs)
                return self if result is target else result

            return drained_async

        def drained(*args: Any, **kwargs: Any) -> Any:
            for _ in self:  # type: ignore[attr-defined]
                pass
            result = method(*args, **kwargs)
            return self if result is target else result

        return drained

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._aicm_target, name, value)


class _SyncStream(_TrackedStream):
    __slots__ = ()

    def __iter__(self) -> _SyncStream:
        return self

    def __next__(self) -> Any:
        step = self._aicm_next
        if step is None:
            target = self._aicm_target
            # Call the target's own __next__ where it has one: iter() on an SDK stream
            # makes a second generator over the same response.
            step = target.__next__ if hasattr(type(target), "__next__") else iter(target).__next__
            object.__setattr__(self, "_aicm_next", step)
        try:
            chunk = step()
        except BaseException:  # StopIteration, a failure or an interrupt all end the stream
            self._aicm_state.finish()
            raise
        self._aicm_state.chunks.append(chunk)
        return chunk


class _SyncStreamCM(_SyncStream):
    __slots__ = ()

    def __enter__(self) -> Any:
        entered = self._aicm_target.__enter__()
        return self if entered is self._aicm_target else entered

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._aicm_target.__exit__(*exc_info)
        finally:
            self._aicm_state.finish()


class _AsyncStream(_TrackedStream):
    __slots__ = ()

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        step = self._aicm_next
        if step is None:
            target = self._aicm_target
            step = (
                target.__anext__
                if hasattr(type(target), "__anext__")
                else target.__aiter__().__anext__
            )
            object.__setattr__(self, "_aicm_next", step)
        try:
            chunk = await step()
        except BaseException:  # StopAsyncIteration, a failure or a cancellation
            self._aicm_state.finish()
            raise
        self._aicm_state.chunks.append(chunk)
        return chunk


class _AsyncStreamCM(_AsyncStream):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        entered = await self._aicm_target.__aenter__()
        return self if entered is self._aicm_target else entered

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._aicm_target.__aexit__(*exc_info)
        finally:
            self._aicm_state.finish()


def _stream_class(rtype: type[Any], is_async: bool) -> type[_TrackedStream]:
    # Only the protocols the target has: a wrapper that claimed __aiter__ for a sync stream
    # would send frameworks (starlette's StreamingResponse) down the wrong path.
    if is_async:
        return _AsyncStreamCM if hasattr(rtype, "__aenter__") else _AsyncStream
    return _SyncStreamCM if hasattr(rtype, "__enter__") else _SyncStream


class _StreamManager(_Delegate):
    """Base of the wrappers of helper managers: the stream exists once they are entered."""

    __slots__ = ("_aicm_state", "_aicm_stream")

    _aicm_state: _StreamState
    _aicm_stream: _TrackedStream | None

    def __init__(self, target: Any, state: _StreamState) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_state", state)
        object.__setattr__(self, "_aicm_stream", None)

    def _aicm_entered(self, entered: Any) -> Any:
        state = self._aicm_state
        etype = type(entered)
        kind = _type_kind(etype)
        if kind == "maybe":
            kind = _iteration(etype)
        if kind is None:
            # Not a stream after all: what was entered is the response.
            _report_call(state.hook, state.path, state.args, state.kwargs, entered, state.func)
            return entered
        state.target = entered
        stream = _stream_class(etype, kind == "async")(entered, state)
        object.__setattr__(self, "_aicm_stream", stream)
        return stream


class _SyncStreamManager(_StreamManager):
    __slots__ = ()

    def __enter__(self) -> Any:
        return self._aicm_entered(self._aicm_target.__enter__())

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._aicm_target.__exit__(*exc_info)
        finally:
            if self._aicm_stream is not None:
                self._aicm_state.finish()


class _AsyncStreamManager(_StreamManager):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        return self._aicm_entered(await self._aicm_target.__aenter__())

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._aicm_target.__aexit__(*exc_info)
        finally:
            if self._aicm_stream is not None:
                self._aicm_state.finish()


# Names the proxy answers itself; every other name goes to the target. ``__doc__`` and
# ``__module__`` are the target's, as on functools.wraps-style wrappers.
_PROXY_NAMES = (frozenset(dir(_TrackedCallable)) | _OWN) - {
    "__doc__",
    "__module__",
    "__annotations__",
}
