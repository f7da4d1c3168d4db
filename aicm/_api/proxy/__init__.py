"""Transparent proxies that report the tracked calls and streams of any client (layer 4 helper).

``TrackedProxy(client, extractor_hook=hook)`` behaves like ``client``: attributes, nested
resources, sync and async methods, context managers, ``isinstance``. It remembers the
dotted path of each attribute access; when a called path is tracked (``hook.should_track``)
it hands the call and its response to ``hook.on_call`` once the call has returned (or its
coroutine has been awaited). A streaming result is handed back wrapped: every chunk passes
through untouched and ``hook.on_stream_end`` runs exactly once when the stream is
exhausted, closed, left by ``with``/``async with``, fails, or is garbage-collected, even
before its first chunk (the request was made: ``chunks`` is then empty). A helper stream's
``get_final_*``/``until_done`` read the rest through the wrapper first. A hook may also
have ``begin_call(call) -> bool``, asked instead of ``should_track`` before each call; the
[`UsageLimitExceeded`][aicm.UsageLimitExceeded] it raises refuses the call.

What the client hands out stays tracked by the same hook: the clients ``with_options`` and
``copy`` return, and the ``with_raw_response``/``with_streaming_response`` namespaces, whose
calls keep the plain path (``chat.completions.create``) and are reported once, from the
body the HTTP response parses to; a streamed body read past the SDK's parser (raw lines or
bytes) is reported as a stream that ended before its first chunk.

The hooks run in the caller's thread or task and must be quick; any exception they raise
is logged on ``aicm.cost_manager`` and swallowed, so tracking never breaks the user's call.
No delivery happens here.

Layout: ``_base`` (the one base every wrapper here derives from), ``_hooks`` (the hook
protocol and one tracked call), ``_client`` (the client, resource and method proxy),
``_streams`` (stream wrappers), ``_responses`` (raw and streaming HTTP responses).
"""

from ._client import TrackedProxy
from ._hooks import Call, ExtractorHook, ProxyHooks
from ._streams import track_stream

__all__ = ["Call", "ExtractorHook", "ProxyHooks", "TrackedProxy", "track_stream"]
