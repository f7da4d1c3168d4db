"""``RestUsageWrapper``: the sync REST wrapper, over `RestUsageRecorder` (layer 5).

The user's own ``requests.Session`` or ``httpx.Client`` makes the call, in the caller's
thread; the response comes back as that library's object, untouched. Extraction uses the
recorder's pure methods; records are queued from the caller's thread and delivered by the
process's shared worker.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._api.recorder import DeliveryOptions, resolve_options
from .._api.rest import RestUsageRecorder, rest_call
from .facade import SyncFacade

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RestUsageWrapper"]


class RestUsageWrapper(SyncFacade[RestUsageRecorder]):
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

        def build() -> RestUsageRecorder:
            return RestUsageRecorder(
                base_url=base_url,
                configs=configs,
                client_customer_key=client_customer_key,
                context=context,
                **options,
            )

        # Resolved here first: with the kill switch on, the delivery worker is never started.
        settings = resolve_options(options, owner=type(self).__name__)
        super().__init__(build, disabled=settings.disabled)
        self.session = session

    def __repr__(self) -> str:
        return repr(self._async).replace("RestUsageRecorder", "RestUsageWrapper", 1)

    @property
    def base_url(self) -> str:
        """The base URL relative paths are appended to."""
        return self._async.base_url

    def scope(
        self, *, client_customer_key: str | None = None, context: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with wrapper.scope(client_customer_key="acme"):`` tags the calls made inside."""
        recorder = self._async if self._closed else self._live()
        return recorder.scope(client_customer_key=client_customer_key, context=context)

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        """Send a request with the wrapped session and record its usage."""
        if self.disabled:  # the kill switch: the call as the session makes it, nothing else
            return self.session.request(method, self._async.url_for(url) or url, **kwargs)
        recorder = self._async if self._closed else self._live()
        full = recorder.call_target(method, url)
        if full is None:
            return self.session.request(method, url, **kwargs)
        response = self.session.request(method, full, **kwargs)
        if not self._closed and not kwargs.get("stream"):
            try:
                self._track(recorder, method, full, kwargs, response)
            except Exception:
                recorder.tracking_failed(method, full)
        return response

    def _track(
        self,
        recorder: RestUsageRecorder,
        method: str,
        url: str,
        kwargs: dict[str, Any],
        response: Any,
    ) -> None:
        call = rest_call(method, url, recorder.base_url)
        host = recorder.cached_host_configs(call.api_id)
        if host is None:
            host = self._runtime.call(recorder.host_configs, call.api_id)
        records = recorder.records_for_response(
            host, call, kwargs, response.status_code, response.headers, response.json
        )
        self._emit(records)

    def get(self, url: str, **kwargs: Any) -> Any:
        """``GET url``."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        """``POST url``."""
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> Any:
        """``PUT url``."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> Any:
        """``PATCH url``."""
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        """``DELETE url``."""
        return self.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> Any:
        """``HEAD url``."""
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> Any:
        """``OPTIONS url``."""
        return self.request("OPTIONS", url, **kwargs)
