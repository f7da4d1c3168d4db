"""The sync tracker's defaults and anonymisation: its async twin's, kept across a fork (layer 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._api.conveniences import TrackConveniences, TrackDefaults

if TYPE_CHECKING:
    from .._api.tracker import AsyncTracker

__all__ = ["TrackConveniencesSync"]


class TrackConveniencesSync(TrackConveniences):
    """The setters of `TrackConveniences` for the facade:
    they act on the async tracker's defaults, which a forked child's new tracker inherits."""

    if TYPE_CHECKING:
        _async: AsyncTracker

    @property
    def track_defaults(self) -> TrackDefaults:
        """The defaults and anonymisation every ``track`` call gets."""
        return self._async.track_defaults

    @track_defaults.setter
    def track_defaults(self, defaults: TrackDefaults) -> None:
        self._async.track_defaults = defaults

    def _start(self) -> None:
        previous: Any = self.__dict__.get("_async")
        super()._start()  # type: ignore[misc]  # SyncFacade._start, next in the MRO
        if previous is not None and previous is not self._async:
            self._async.track_defaults = previous.track_defaults.copy()
