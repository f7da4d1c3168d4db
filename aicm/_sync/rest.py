"""``RestUsageWrapper``: the sync facade over :class:`AsyncRestUsageWrapper` (layer 5).

The user's own ``requests.Session`` or ``httpx.Client`` makes the call, in the caller's
thread; the response comes back as that library's object, untouched. Extraction uses the
async wrapper's pure methods; records are queued from the caller's thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .._api.recorder import DeliveryOptions
from .._api.rest import AsyncRestUsageWrapper, json_body, rest_call
from .facade import SyncFacade

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["RestUsageWrapper"]

logger = logging.getLogger("aicm.rest")


class RestUsageWrapper(SyncFacade[AsyncRestUsageWrapper]):
    """Wrap a ``requests.Session`` or an ``httpx.Client``: calls to ``base_url`` are tracked.

    Takes the same options as :class:`AsyncRestUsageWrapper`; delivery goes through the
    process's shared worker.
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
        if not callable(getattr(session, "request", None)):
            raise TypeError(
                "session must be a requests.Session or an httpx.Client, "
                f"got {type(session).__name__}"
            )
        if isinstance(session, httpx.AsyncClient):
            raise TypeError("an httpx.AsyncClient goes with AsyncRestUsageWrapper")

        def build() -> AsyncRestUsageWrapper:
            return AsyncRestUsageWrapper(
                None,  # this facade sends with the user's own session
                base_url=base_url,
                configs=configs,
                client_customer_key=client_customer_key,
                context=context,
                **options,
            )

        super().__init__(build)
        self.session = session

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncRestUsageWrapper", "RestUsageWrapper", 1)

    def __enter__(self) -> Self:
        return self

    @property
    def base_url(self) -> str:
        """The base URL relative paths are joined to."""
        return self._async.base_url

    def scope(
        self, *, client_customer_key: str | None = None, context: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with wrapper.scope(client_customer_key="acme"):`` tags the calls made inside."""
        return self._live().scope(client_customer_key=client_customer_key, context=context)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send a request with the wrapped session and record its usage."""
        wrapper = self._live()
        full = wrapper.url_for(url)
        response = self.session.request(method, full, **kwargs)
        try:
            self._track(wrapper, method, full, kwargs, response)
        except Exception:
            wrapper.engine.stats.discard("tracking_error")
            logger.exception("tracking %s %s failed; the response is returned as is", method, full)
        return response

    def _track(
        self,
        wrapper: AsyncRestUsageWrapper,
        method: str,
        url: str,
        kwargs: dict[str, Any],
        response: Any,
    ) -> None:
        call = rest_call(method, url, wrapper.base_url)
        extractor = wrapper.cached_extractor(call.api_id)
        if extractor is None:
            extractor = self._runtime.call(wrapper.extractor_for, call.api_id)
        if not extractor.tracks(call.method_key):
            return
        if kwargs.get("stream") and not getattr(response, "_content_consumed", True):
            return  # a streamed requests body: reading it here would consume it
        body = json_body(response.status_code, response.headers, response.json)
        self._emit(wrapper.records_for_response(extractor, call, kwargs, body))

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
