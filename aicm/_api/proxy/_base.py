"""The one base of aicm's transparent proxies: everything not intercepted is the target's.

`ProxyBase` makes a wrapper pass for its target: ``isinstance`` and ``type``-free
checks see the target's class, ``__wrapped__`` is the target, ``dir()`` and ``repr()`` are
the target's, and attributes set or deleted on the wrapper land on the target (the
wrapper's own state lives in slots named ``_aicm_*``). `Delegate` adds the lookup:
every attribute the wrapper does not define is read from the target. The tracked client
proxy defines its own, faster lookup on the base instead.

Why not ``wrapt.ObjectProxy``: it defines every protocol method (``__iter__``,
``__enter__``...) whatever the target has, and a stream wrapper must offer only the
protocols its stream has (frameworks choose their path by them); its ``repr`` is its own;
and the core install would carry one more compiled dependency for these few methods.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Delegate", "ProxyBase", "unwrap"]

_get = object.__getattribute__
_set = object.__setattr__


class ProxyBase:
    """A wrapper that passes for ``_aicm_target`` (see the module docstring)."""

    __slots__ = ("_aicm_target",)

    _aicm_target: Any

    def __init__(self, target: Any) -> None:
        _set(self, "_aicm_target", target)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_aicm_"):
            _set(self, name, value)
        else:
            setattr(_get(self, "_aicm_target"), name, value)

    def __delattr__(self, name: str) -> None:
        if name.startswith("_aicm_"):
            object.__delattr__(self, name)
        else:
            delattr(_get(self, "_aicm_target"), name)

    @property
    def __class__(self) -> type[Any]:  # isinstance() sees the target's class
        return type(_get(self, "_aicm_target"))

    @__class__.setter
    def __class__(self, value: type[Any]) -> None:
        _get(self, "_aicm_target").__class__ = value

    @property
    def __wrapped__(self) -> Any:
        return _get(self, "_aicm_target")

    def __dir__(self) -> list[str]:
        return dir(_get(self, "_aicm_target"))

    def __repr__(self) -> str:
        return repr(_get(self, "_aicm_target"))


class Delegate(ProxyBase):
    """A `ProxyBase` that reads every attribute it does not define from its target."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_aicm_"):
            raise AttributeError(name)
        return getattr(_get(self, "_aicm_target"), name)


def unwrap(value: Any) -> Any:
    """The target of a proxy, else ``value`` itself."""
    if isinstance(value, ProxyBase):
        return _get(value, "_aicm_target")
    return value
