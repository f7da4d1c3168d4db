"""``RestUsageWrapper``: the sync REST wrapper, over `RestUsageRecorder` (layer 5).

The user's own ``requests.Session`` or ``httpx.Client`` makes the call, in the caller's
thread; the response comes back as that library's object, untouched. Extraction uses the
recorder's pure methods; records are queued from the caller's thread and delivered by the
process's shared worker.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._api.recorder import DeliveryOptions
from .._api.rest import HttpVerbs, RestUsageRecorder, rest_call
from .facade import RecorderFacade

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RestUsageWrapper"]


class RestUsageWrapper(RecorderFacade[RestUsageRecorder], HttpVerbs[Any]):
    """Wrap a ``requests.Session`` or an ``httpx.Client``: calls to ``base_url`` are tracked.

    Takes the same options as [`AsyncRestUsageWrapper`][aicm.AsyncRestUsageWrapper]; the base URL's
    configs are loaded when it is built. A ``requests`` call made with ``stream=True`` is passed
    through untracked: its body is the caller's to read. After `close()` calls pass
    through untracked.
    """

    def __init__(
        self,
        session: Any,
        *,
        base_url: str,
        configs: Any = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Unpack[DeliveryOptions],
    ) -> None:
        send = getattr(session, "request", None)
        if not callable(send) or inspect.iscoroutinefunction(send):
            raise TypeError(
                "session must be a requests.Session or an httpx.Client (an "
                f"httpx.AsyncClient goes with AsyncRestUsageWrapper), got {type(session).__name__}"
            )

        build = functools.partial(RestUsageRecorder, base_url=base_url)
        super().__init__(build, configs, client_customer_key, context, options)
        self.session = session

    @property
    def base_url(self) -> str:
        """The base URL relative paths are appended to."""
        return self._async.base_url

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        """Send a request with the wrapped session and record its usage."""
        if self.disabled:  # the kill switch: the call as the session makes it, nothing else
            return self.session.request(method, self._async.url_for(url) or url, **kwargs)
        recorder = self._open()
        full = recorder.call_target(method, url)
        if full is None:
            return self.session.request(method, url, **kwargs)
        response = self.session.request(method, full, **kwargs)
        if not self._closed and not kwargs.get("stream"):
            try:
                call = rest_call(method, full, recorder.base_url)
                host = recorder.cached_host_configs(call.api_id)
                if host is None:
                    host = self._runtime.call(recorder.host_configs, call.api_id)
                recorder.emit_blocking(
                    recorder.records_for_response(
                        host, call, kwargs, response.status_code, response.headers, response.json
                    )
                )
            except Exception:
                recorder.tracking_failed(method, full)
        return response
