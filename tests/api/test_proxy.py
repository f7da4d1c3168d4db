"""TrackedProxy: transparent wrapping of plain objects and the real openai/anthropic clients."""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import anyio
import anyio.lowlevel
import attrs
import openai
import pytest

from aicm._api.proxy import Call, ProxyHooks, TrackedProxy
from aicm._core.exceptions import UsageLimitExceeded
from aicm._core.extractor import UniversalExtractor
from aicm._core.models import ServiceConfig
from tests.fakes import FAIL_MODEL, FakeAnthropic, FakeOpenAI

TS = "2024-01-01T00:00:00Z"
MESSAGES = [{"role": "user", "content": "Say hello"}]


# -- hooks ----------------------------------------------------------------------------------


@attrs.define
class Seen:
    """One report the hook received."""

    path: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    func: Callable[..., Any]


class RecordingHook:
    """Records every report; tracks the given paths; can be told to fail."""

    def __init__(self, *tracked: str, fail: bool = False, fail_should_track: bool = False):
        self.tracked = set(tracked)
        self.fail = fail
        self.fail_should_track = fail_should_track
        self.calls: list[Seen] = []
        self.ends: list[Seen] = []

    def should_track(self, path: str) -> bool:
        if self.fail_should_track:
            raise RuntimeError("should_track exploded")
        return path in self.tracked

    def on_call(self, call: Call, response: Any) -> None:
        self.calls.append(Seen(call.path, call.args, call.kwargs, response, call.func))
        if self.fail:
            raise RuntimeError("hook exploded")

    def on_stream_end(self, call: Call, chunks: list[Any]) -> None:
        self.ends.append(Seen(call.path, call.args, call.kwargs, chunks, call.func))
        if self.fail:
            raise RuntimeError("hook exploded")


class ExtractingHook:
    """What the CostManager does: extract payloads with a UniversalExtractor."""

    def __init__(self, *handling: dict[str, Any]) -> None:
        self.extractor = UniversalExtractor(
            ServiceConfig(config_id=f"cfg-{i}", api_id="api", handling_config=h)
            for i, h in enumerate(handling)
        )
        self.payloads: list[dict[str, Any]] = []

    def should_track(self, path: str) -> bool:
        return self.extractor.tracks(path)

    def on_call(self, call: Call, response: Any) -> None:
        self.payloads += self.extractor.extract(
            call.path,
            args=call.args,
            kwargs=call.kwargs,
            response=response,
            func=call.func,
            timestamp=TS,
        )

    def on_stream_end(self, call: Call, chunks: list[Any]) -> None:
        self.payloads += self.extractor.extract_stream_end(
            call.path, chunks, args=call.args, kwargs=call.kwargs, func=call.func, timestamp=TS
        )


OPENAI_CONFIG: dict[str, Any] = {
    "tracked_methods": ["chat.completions.create", "chat.completions.stream"],
    "request_fields": ["model"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "response_id": "response_id",
        "usage": "usage_data",
    },
    "streaming": {"final_fields": ["usage"]},
}

ANTHROPIC_CONFIG: dict[str, Any] = {
    "tracked_methods": ["messages.create", "messages.stream"],
    "request_fields": ["model"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "response_id": "response_id",
        "input_tokens": "usage_data.input_tokens",
        "output_tokens": "usage_data.output_tokens",
    },
}


# -- a plain user class ---------------------------------------------------------------------


class Memory:
    def recall(self, key: int) -> int:
        return key * 2


class Numbers:
    """Iterable but not an iterator, like some SDKs' stream results."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))


class Calculator:
    factor = 2

    def __init__(self) -> None:
        self.history: list[int] = []
        self.memory = Memory()
        self.entered = False

    def add(self, a: int, b: int) -> int:
        return a + b

    async def aadd(self, a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a + b

    def fail(self) -> None:
        raise ValueError("user error")

    async def afail(self) -> None:
        raise ValueError("user error")

    def count(self, n: int, *, fail_at: int | None = None) -> Iterator[int]:
        for i in range(n):
            if i == fail_at:
                raise ValueError("stream broke")
            yield i

    async def acount(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await anyio.lowlevel.checkpoint()
            yield i

    def numbers(self, n: int, stream: bool = False) -> Numbers:
        return Numbers(n)

    def __enter__(self) -> Calculator:
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.entered = False


def wrap(target: Any, hook: Any) -> Any:
    return TrackedProxy(target, extractor_hook=hook)


def test_tracked_call_is_reported_once() -> None:
    """A tracked call returns its result and reports path, arguments, result and function."""
    target = Calculator()
    hook = RecordingHook("add")
    proxy = wrap(target, hook)
    assert proxy.add(2, b=3) == 5
    [seen] = hook.calls
    assert (seen.path, seen.args, seen.kwargs, seen.result) == ("add", (2,), {"b": 3}, 5)
    assert seen.func == target.add
    assert hook.ends == []


def test_untracked_calls_are_not_reported() -> None:
    """Calls of untracked paths are plain calls."""
    hook = RecordingHook("other")
    proxy = wrap(Calculator(), hook)
    assert proxy.add(1, 1) == 2
    assert proxy.memory.recall(4) == 8
    assert hook.calls == []


def test_untracked_methods_are_returned_bare() -> None:
    """An untracked method is the target's own bound method; tracking it later wraps it."""
    target = Calculator()
    hook = RecordingHook()
    proxy = wrap(target, hook)
    assert proxy.add == target.add
    assert not isinstance(proxy.add, TrackedProxy)
    hook.tracked.add("add")
    assert isinstance(proxy.add, TrackedProxy)
    assert proxy.add(1, 2) == 3
    assert len(hook.calls) == 1


def test_nested_paths_are_dotted() -> None:
    """Nested resources report their dotted path."""
    hook = RecordingHook("memory.recall")
    proxy = wrap(Calculator(), hook)
    assert proxy.memory.recall(21) == 42
    assert [s.path for s in hook.calls] == ["memory.recall"]


def test_proxy_looks_like_its_target() -> None:
    """isinstance, __class__, repr, str, dir, ==, hash and bool are the target's."""
    target = Calculator()
    proxy = wrap(target, RecordingHook())
    assert isinstance(proxy, Calculator)
    assert isinstance(proxy, TrackedProxy)
    assert proxy.__class__ is Calculator
    assert isinstance(proxy.memory, Memory)
    assert repr(proxy) == repr(target)
    assert str(proxy) == str(target)
    assert "add" in dir(proxy)
    assert proxy == target
    assert target == proxy
    assert hash(proxy) == hash(target)
    assert bool(proxy)
    assert proxy.__wrapped__ is target
    assert proxy.add.__name__ == "add"


def test_plain_values_are_returned_unwrapped() -> None:
    """Data attributes come back as they are, not proxied."""
    target = Calculator()
    proxy = wrap(target, RecordingHook())
    assert type(proxy.factor) is int
    assert proxy.history is target.history
    assert proxy.__dict__ is target.__dict__


def test_setting_and_deleting_attributes_reach_the_target() -> None:
    """Attribute writes and deletes go to the target."""
    target = Calculator()
    proxy = wrap(target, RecordingHook())
    proxy.factor = 3
    assert target.factor == 3
    del proxy.factor
    assert target.factor == 2


def test_children_are_cached_but_follow_replacements() -> None:
    """Child proxies are reused while the target's attribute is the same object."""
    target = Calculator()
    hook = RecordingHook("memory.recall", "add")
    proxy = wrap(target, hook)
    assert proxy.memory is proxy.memory
    assert proxy.add is proxy.add

    class Doubled(Memory):
        def recall(self, key: int) -> int:
            return key * 4

    target.memory = Doubled()
    assert proxy.memory.recall(1) == 4
    assert isinstance(proxy.memory, Doubled)
    assert len(hook.calls) == 1


def test_with_block_yields_the_proxy() -> None:
    """`with proxy as p` enters the target and hands back the proxy itself."""
    target = Calculator()
    hook = RecordingHook("add")
    proxy = wrap(target, hook)
    with proxy as entered:
        assert entered is proxy
        assert target.entered
        entered.add(1, 2)
    assert not target.entered
    assert len(hook.calls) == 1


def test_user_exceptions_propagate_and_nothing_is_tracked() -> None:
    """An exception from the call itself reaches the caller untouched; no report."""
    hook = RecordingHook("fail")
    with pytest.raises(ValueError, match="user error"):
        wrap(Calculator(), hook).fail()
    assert hook.calls == []


def test_hook_exceptions_never_reach_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    """A failing hook is logged on aicm.cost_manager; the caller still gets the result."""
    hook = RecordingHook("add", "count", fail=True)
    proxy = wrap(Calculator(), hook)
    with caplog.at_level(logging.ERROR, logger="aicm.cost_manager"):
        assert proxy.add(2, 3) == 5
        assert list(proxy.count(2)) == [0, 1]
    assert len(hook.calls) == 1
    assert len(hook.ends) == 1
    assert [r.name for r in caplog.records] == ["aicm.cost_manager", "aicm.cost_manager"]


def test_failing_should_track_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """If should_track raises, the call is returned untracked and the error logged."""
    hook = RecordingHook("add", fail_should_track=True)
    with caplog.at_level(logging.ERROR, logger="aicm.cost_manager"):
        assert wrap(Calculator(), hook).add(2, 3) == 5
    assert hook.calls == []
    assert "should_track" in caplog.text


class Ledger:
    def __init__(self) -> None:
        self.history: list[int] = []

    def record(self, n: int) -> int:
        self.history.append(n)
        return n


class BeginningHook(RecordingHook):
    """A hook asked once per call (``begin_call``); what it answers is kept on the call."""

    def __init__(self, *tracked: str, begin_raises: BaseException | None = None) -> None:
        super().__init__(*tracked)
        self.begun: list[str] = []
        self.begin_raises = begin_raises

    def before_call(self, call: Call) -> None:
        raise AssertionError("begin_call replaces before_call")

    def begin_call(self, call: Call) -> bool:
        self.begun.append(call.path)
        if self.begin_raises is not None:
            raise self.begin_raises
        if call.path not in self.tracked:
            return False
        call.tracker = ("kept", call.path)
        return True

    def on_call(self, call: Call, response: Any) -> None:
        assert call.tracker == ("kept", call.path)
        super().on_call(call, response)


def test_a_hook_with_begin_call_is_asked_once_per_call() -> None:
    """``begin_call`` alone decides a call; what it keeps reaches ``on_call``."""
    hook = BeginningHook("add")
    proxy = wrap(Calculator(), hook)
    assert proxy.add(2, 3) == 5
    assert proxy.add(1, 1) == 2
    assert hook.begun == ["add", "add"]
    assert [seen.result for seen in hook.calls] == [5, 2]
    hook.tracked.discard("add")  # no longer tracked: the next call passes through
    assert proxy.add(4, 4) == 8
    assert hook.begun == ["add", "add", "add"]
    assert len(hook.calls) == 2


def test_a_usage_limit_from_begin_call_refuses_the_call() -> None:
    """The UsageLimitExceeded ``begin_call`` raises reaches the caller; the call is not made."""
    target = Ledger()
    hook = BeginningHook("record", begin_raises=UsageLimitExceeded("over the limit", limit_id="l1"))
    with pytest.raises(UsageLimitExceeded):
        wrap(target, hook).record(7)
    assert target.history == []
    assert hook.calls == []


def test_a_failing_begin_call_is_logged_and_the_call_made_untracked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any other error of ``begin_call`` is logged; the call is made, untracked."""
    target = Ledger()
    hook = BeginningHook("record", begin_raises=RuntimeError("begin exploded"))
    with caplog.at_level(logging.ERROR, logger="aicm.cost_manager"):
        wrap(target, hook).record(7)
    assert target.history == [7]
    assert hook.calls == []
    assert "begin_call('record') failed" in caplog.text


def test_proxy_hooks_defaults_track_nothing() -> None:
    """ProxyHooks() is a valid hook that tracks nothing."""
    assert wrap(Calculator(), ProxyHooks()).add(1, 2) == 3


@pytest.mark.anyio
async def test_async_call_is_reported_after_it_is_awaited() -> None:
    """An async method is reported once, when its coroutine completes."""
    hook = RecordingHook("aadd")
    proxy = wrap(Calculator(), hook)
    pending = proxy.aadd(2, 3)
    assert hook.calls == []
    assert await pending == 5
    assert [(s.path, s.result) for s in hook.calls] == [("aadd", 5)]


@pytest.mark.anyio
async def test_async_user_exceptions_propagate() -> None:
    """An exception from an awaited call propagates; nothing is tracked."""
    hook = RecordingHook("afail")
    with pytest.raises(ValueError, match="user error"):
        await wrap(Calculator(), hook).afail()
    assert hook.calls == []


def test_generator_stream_is_reported_when_exhausted() -> None:
    """A generator's chunks pass through and are reported once at exhaustion."""
    hook = RecordingHook("count")
    stream = wrap(Calculator(), hook).count(3)
    assert hook.ends == []
    assert list(stream) == [0, 1, 2]
    [seen] = hook.ends
    assert (seen.path, seen.args, seen.result) == ("count", (3,), [0, 1, 2])
    assert hook.calls == []
    with pytest.raises(StopIteration):
        next(stream)
    assert len(hook.ends) == 1


def test_generator_closed_early_is_reported_once() -> None:
    """close() reports the chunks seen so far, once."""
    hook = RecordingHook("count")
    stream = wrap(Calculator(), hook).count(10)
    assert next(stream) == 0
    assert next(stream) == 1
    stream.close()
    stream.close()
    assert [s.result for s in hook.ends] == [[0, 1]]


def test_abandoned_stream_is_reported_when_collected() -> None:
    """`break` then dropping the stream reports it once, at garbage collection."""
    hook = RecordingHook("count")
    stream = wrap(Calculator(), hook).count(10)
    for chunk in stream:
        if chunk == 2:
            break
    assert hook.ends == []
    del stream
    gc.collect()
    assert [s.result for s in hook.ends] == [[0, 1, 2]]


def test_failing_stream_is_reported_and_raises() -> None:
    """A stream that raises reports what it yielded and the error propagates."""
    hook = RecordingHook("count")
    with pytest.raises(ValueError, match="stream broke"):
        for _ in wrap(Calculator(), hook).count(5, fail_at=2):
            pass
    assert [s.result for s in hook.ends] == [[0, 1]]


def test_stream_flag_with_an_iterable_result_is_a_stream() -> None:
    """stream=True and an iterable (not iterator) result is treated as a stream."""
    hook = RecordingHook("numbers")
    proxy = wrap(Calculator(), hook)
    assert list(proxy.numbers(3, stream=True)) == [0, 1, 2]
    assert [s.result for s in hook.ends] == [[0, 1, 2]]
    result = proxy.numbers(2)
    assert isinstance(result, Numbers)
    assert [s.result for s in hook.calls] == [result]


@pytest.mark.anyio
async def test_async_generator_stream_is_reported() -> None:
    """An async generator passes its chunks through and is reported once."""
    hook = RecordingHook("acount")
    proxy = wrap(Calculator(), hook)
    assert [i async for i in proxy.acount(3)] == [0, 1, 2]
    early = proxy.acount(5)
    assert await early.__anext__() == 0
    await early.aclose()
    assert [s.result for s in hook.ends] == [[0, 1, 2], [0]]


class Session:
    """A helper-style manager: the request happens on entering, like messages.stream()."""

    def __init__(self, n: int, answer: Any = None) -> None:
        self.n = n
        self.answer = answer
        self.closed = False

    def __enter__(self) -> Any:
        return self.answer if self.answer is not None else Numbers(self.n)

    def __exit__(self, *exc: object) -> None:
        self.closed = True


class Helper:
    def stream(self, n: int, answer: Any = None) -> Session:
        return Session(n, answer)


def test_helper_manager_is_wrapped() -> None:
    """A `.stream()` helper's manager is wrapped: its stream is reported once, on exit."""
    hook = RecordingHook("stream")
    manager = wrap(Helper(), hook).stream(3)
    assert isinstance(manager, Session)
    with manager as stream:
        assert next(iter(stream)) == 0
        assert hook.ends == []
    assert manager.closed
    assert [s.result for s in hook.ends] == [[0]]


def test_helper_manager_entering_an_answer_reports_a_call() -> None:
    """A manager that enters into a plain answer (not a stream) reports it as a call."""
    hook = RecordingHook("stream")
    with wrap(Helper(), hook).stream(0, answer={"usage": 1}) as answer:
        assert answer == {"usage": 1}
    assert [s.result for s in hook.calls] == [{"usage": 1}]
    assert hook.ends == []


def test_every_wrapper_passes_for_its_target() -> None:
    """Clients, methods, streams, helper managers and with_options clients all share one base:
    isinstance, __wrapped__, repr and dir are the target's, attribute writes land on it,
    and a wrapper compares equal to its target."""
    hook = RecordingHook("add", "count", "numbers", "stream")
    calculator = Calculator()
    client = wrap(calculator, hook)
    numbers = client.numbers(2, stream=True)
    manager = wrap(Helper(), hook).stream(1)
    factory = wrap(Service(), hook).with_options
    wrappers = [
        (client, calculator),
        (client.add, None),
        (client.count(2), None),
        (numbers, None),
        (manager, None),
        (factory, None),
    ]
    for wrapper, target in wrappers:
        inner = wrapper.__wrapped__
        assert target is None or inner is target
        assert type(wrapper) is not type(inner)  # a wrapper, not the object itself
        assert isinstance(wrapper, type(inner))
        assert wrapper.__class__ is type(inner)
        assert repr(wrapper) == repr(inner)
        assert dir(wrapper) == dir(inner)
        if hasattr(inner, "__dict__") and not inspect.ismethod(inner):  # takes attributes
            wrapper.aicm_mark = 7
            assert inner.aicm_mark == 7
            del wrapper.aicm_mark
            assert not hasattr(inner, "aicm_mark")
    assert client == calculator
    assert client.add.__wrapped__ == calculator.add
    assert list(numbers) == [0, 1]
    assert [s.result for s in hook.ends] == [[0, 1]]


def test_sync_stream_wrapper_is_not_async() -> None:
    """A sync stream's wrapper offers no async protocol (frameworks pick by protocol)."""
    import collections.abc

    stream = wrap(Calculator(), RecordingHook("count")).count(2)
    assert isinstance(stream, collections.abc.Iterator)
    assert not isinstance(stream, collections.abc.AsyncIterable)
    assert not hasattr(stream, "__aiter__")
    assert list(stream) == [0, 1]


def test_seed_000_through_the_proxy() -> None:
    """Seed 000 end to end: add(2, 3) through the proxy gives the seed's payload."""
    seed = {
        "tracked_methods": ["add"],
        "request_fields": ["a", "b"],
        "response_fields": [{"key": "value", "path": ""}],
        "payload_mapping": {
            "config": "config_identifier",
            "timestamp": "timestamp",
            "usage": "response_data.value",
        },
        "static_payload_fields": {"static": 1},
    }
    hook = ExtractingHook(seed)
    assert wrap(Calculator(), hook).add(2, 3) == 5
    assert hook.payloads == [{"config": "cfg-0", "timestamp": TS, "usage": 5, "static": 1}]


def test_suffixes_do_not_match_through_the_proxy() -> None:
    """Tracking `create` does not track `chat.completions.create`."""

    class Completions:
        def create(self) -> int:
            return 1

    class Chat:
        completions = Completions()

    class Client:
        chat = Chat()

        def create(self) -> int:
            return 2

    hook = ExtractingHook({"tracked_methods": ["create"], "static_payload_fields": {"n": 1}})
    proxy = wrap(Client(), hook)
    assert proxy.chat.completions.create() == 1
    assert hook.payloads == []
    assert proxy.create() == 2
    assert hook.payloads == [{"n": 1}]


# -- the real SDKs against the fakes --------------------------------------------------------


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI API for the module."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    """A fake Anthropic API for the module."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def openai_client(openai_fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """A real openai.OpenAI pointed at the fake."""
    client = openai.OpenAI(base_url=openai_fake.base_url, api_key="test", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def anthropic_client(anthropic_fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    """A real anthropic.Anthropic pointed at the fake."""
    client = anthropic.Anthropic(base_url=anthropic_fake.url, api_key="test", max_retries=0)
    yield client
    client.close()


def chat(client: Any, **extra: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **extra)


def claude(client: Any, **extra: Any) -> Any:
    return client.messages.create(
        model="claude-test-model", max_tokens=64, messages=MESSAGES, **extra
    )


def helper_stream(client: Any) -> Any:
    return client.messages.stream(model="claude-test-model", max_tokens=64, messages=MESSAGES)


USAGE_STREAM = {"stream": True, "stream_options": {"include_usage": True}}


def same_answer(a: Any, b: Any) -> bool:
    skip = {"id", "created"}
    return bool(a.model_dump(exclude=skip) == b.model_dump(exclude=skip))


def test_openai_create_is_tracked(openai_client: openai.OpenAI) -> None:
    """chat.completions.create through the proxy: same answer, one report, the same object."""
    hook = RecordingHook("chat.completions.create")
    proxy = wrap(openai_client, hook)
    assert isinstance(proxy, openai.OpenAI)
    assert isinstance(proxy.chat.completions, type(openai_client.chat.completions))
    result = chat(proxy)
    assert same_answer(result, chat(openai_client))
    [seen] = hook.calls
    assert seen.path == "chat.completions.create"
    assert seen.result is result
    assert seen.kwargs["model"] == "gpt-4o-mini"
    assert result.usage is not None
    assert result.usage.total_tokens == 17


def test_openai_errors_propagate_untracked(openai_client: openai.OpenAI) -> None:
    """An API error reaches the caller as the SDK's own exception; nothing is tracked."""
    hook = RecordingHook("chat.completions.create")
    with pytest.raises(openai.BadRequestError):
        wrap(openai_client, hook).chat.completions.create(model=FAIL_MODEL, messages=MESSAGES)
    assert hook.calls == []
    assert hook.ends == []


def test_openai_stream_passes_every_chunk(openai_client: openai.OpenAI) -> None:
    """stream=True: the user gets every chunk; the hook gets the same chunks once."""
    hook = RecordingHook("chat.completions.create")
    stream = chat(wrap(openai_client, hook), **USAGE_STREAM)
    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    chunks = list(stream)
    direct = list(chat(openai_client, **USAGE_STREAM))
    assert len(chunks) == len(direct) == 8
    assert all(same_answer(a, b) for a, b in zip(chunks, direct, strict=True))
    [seen] = hook.ends
    assert len(seen.result) == len(chunks)
    assert all(a is b for a, b in zip(seen.result, chunks, strict=True))
    assert chunks[-1].usage.total_tokens == 17
    assert hook.calls == []


def test_openai_stream_and_answer_give_the_same_usage(openai_client: openai.OpenAI) -> None:
    """The extractor sees the same usage for a streamed and a plain call."""
    hook = ExtractingHook(OPENAI_CONFIG)
    proxy = wrap(openai_client, hook)
    chat(proxy)
    for _ in chat(proxy, **USAGE_STREAM):
        pass
    with proxy.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as events:
        events.get_final_completion()
    plain, streamed, helper = hook.payloads
    assert plain["usage"] == streamed["usage"] == helper["usage"]
    assert plain["usage"]["total_tokens"] == 17
    assert streamed["response_id"].startswith("chatcmpl-fake-")
    assert streamed["service_id"] == "gpt-4o-mini"


def test_openai_stream_closed_early(openai_client: openai.OpenAI) -> None:
    """close() after one chunk reports that chunk, once."""
    hook = RecordingHook("chat.completions.create")
    stream = chat(wrap(openai_client, hook), **USAGE_STREAM)
    first = next(iter(stream))
    stream.close()
    stream.close()
    [seen] = hook.ends
    assert seen.result == [first]


def test_openai_stream_left_by_with(openai_client: openai.OpenAI) -> None:
    """Leaving `with stream` early reports the chunks seen."""
    hook = RecordingHook("chat.completions.create")
    with chat(wrap(openai_client, hook), **USAGE_STREAM) as stream:
        for _ in stream:
            break
        assert hook.ends == []
    assert [len(s.result) for s in hook.ends] == [1]


def test_openai_stream_abandoned(openai_client: openai.OpenAI) -> None:
    """A stream left by `break` and dropped is reported at collection."""
    hook = RecordingHook("chat.completions.create")
    stream = chat(wrap(openai_client, hook), **USAGE_STREAM)
    for _ in stream:
        break
    del stream
    gc.collect()
    assert [len(s.result) for s in hook.ends] == [1]


def test_openai_helper_stream_reports_snapshot(openai_client: openai.OpenAI) -> None:
    """chat.completions.stream(): events pass through; the final snapshot carries usage."""
    hook = RecordingHook("chat.completions.stream")
    proxy = wrap(openai_client, hook)
    with proxy.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        kinds = [event.type for event in stream]
        assert "content.done" in kinds
        assert hook.ends  # reported when exhausted
    [seen] = hook.ends
    assert seen.result[-1].usage.total_tokens == 17
    assert len(seen.result) == len(kinds) + 1


def test_openai_client_as_context_manager(openai_fake: FakeOpenAI) -> None:
    """`with proxy as client` keeps tracking inside the block and closes the client."""
    hook = RecordingHook("chat.completions.create")
    target = openai.OpenAI(base_url=openai_fake.base_url, api_key="test", max_retries=0)
    with wrap(target, hook) as client:
        chat(client)
    assert len(hook.calls) == 1
    assert target.is_closed()


# Closing an SDK AsyncStream early leaves its inner async generators to the event loop's
# finalizer; trio warns about that even without the proxy, so the warning is the SDK's.
SDK_EARLY_CLOSE = pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")


@SDK_EARLY_CLOSE
@pytest.mark.anyio
async def test_async_openai_create_and_stream(openai_fake: FakeOpenAI) -> None:
    """AsyncOpenAI: awaited create, a full stream and an early close are each reported once."""
    hook = RecordingHook("chat.completions.create")
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="test", max_retries=0
    ) as client:
        proxy = wrap(client, hook)
        assert isinstance(proxy, openai.AsyncOpenAI)
        result = await chat(proxy)
        assert result.usage.total_tokens == 17
        assert [s.result for s in hook.calls] == [result]

        stream = await chat(proxy, **USAGE_STREAM)
        assert isinstance(stream, openai.AsyncStream)
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage.total_tokens == 17

        early = await chat(proxy, **USAGE_STREAM)
        first = await early.__anext__()
        await early.close()

        async with await chat(proxy, **USAGE_STREAM) as entered:
            async for _ in entered:
                break
    assert [len(s.result) for s in hook.ends] == [len(chunks), 1, 1]
    assert hook.ends[1].result == [first]
    assert len(hook.calls) == 1


@pytest.mark.anyio
async def test_async_openai_errors_propagate(openai_fake: FakeOpenAI) -> None:
    """An async API error propagates; nothing is tracked."""
    hook = RecordingHook("chat.completions.create")
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="test", max_retries=0
    ) as client:
        with pytest.raises(openai.BadRequestError):
            await wrap(client, hook).chat.completions.create(model=FAIL_MODEL, messages=MESSAGES)
    assert hook.calls == hook.ends == []


def test_anthropic_create_is_tracked(anthropic_client: anthropic.Anthropic) -> None:
    """messages.create through the proxy: same answer, one report."""
    hook = RecordingHook("messages.create")
    proxy = wrap(anthropic_client, hook)
    assert isinstance(proxy, anthropic.Anthropic)
    result = claude(proxy)
    assert same_answer(result, claude(anthropic_client))
    [seen] = hook.calls
    assert seen.result is result
    assert (result.usage.input_tokens, result.usage.output_tokens) == (25, 15)


def test_anthropic_stream_and_helper_give_the_same_usage(
    anthropic_client: anthropic.Anthropic,
) -> None:
    """create, create(stream=True) and the messages.stream helper extract equal usage."""
    hook = ExtractingHook(ANTHROPIC_CONFIG)
    proxy = wrap(anthropic_client, hook)
    claude(proxy)
    events = list(claude(proxy, stream=True))
    assert events[0].type == "message_start"
    with helper_stream(proxy) as stream:
        message = stream.get_final_message()
    with helper_stream(proxy) as stream:
        text = "".join(stream.text_stream)
    assert text == "".join(FakeAnthropic().pieces)
    assert message.usage.output_tokens == 15
    assert len(hook.payloads) == 4
    for payload in hook.payloads:
        assert (payload["input_tokens"], payload["output_tokens"]) == (25, 15)
        assert payload["response_id"].startswith("msg_fake_")
        assert payload["service_id"] == "claude-test-model"


def test_anthropic_helper_iterated_directly(anthropic_client: anthropic.Anthropic) -> None:
    """Iterating the helper stream passes its events through and reports them once."""
    hook = RecordingHook("messages.stream")
    with helper_stream(wrap(anthropic_client, hook)) as stream:
        assert isinstance(stream, anthropic.MessageStream)
        events = list(stream)
        assert stream.current_message_snapshot.usage.output_tokens == 15
    assert "text" in [e.type for e in events]
    [seen] = hook.ends
    assert seen.result[:-1] == events
    assert seen.result[-1].usage.input_tokens == 25


def test_anthropic_stream_closed_early(anthropic_client: anthropic.Anthropic) -> None:
    """A raw event stream closed after message_start reports input tokens only."""
    hook = ExtractingHook(ANTHROPIC_CONFIG)
    stream = claude(wrap(anthropic_client, hook), stream=True)
    assert next(iter(stream)).type == "message_start"
    stream.close()
    assert hook.payloads == [
        {
            "config_id": "cfg-0",
            "service_id": "claude-test-model",
            "response_id": hook.payloads[0]["response_id"],
            "input_tokens": 25,
            "output_tokens": 1,
        }
    ]


def test_anthropic_helper_left_before_reading(anthropic_client: anthropic.Anthropic) -> None:
    """A helper stream entered and left unread is reported once (nothing read yet)."""
    hook = RecordingHook("messages.stream")
    with helper_stream(wrap(anthropic_client, hook)):
        pass
    assert [s.result for s in hook.ends] == [[]]


def test_anthropic_errors_propagate(anthropic_client: anthropic.Anthropic) -> None:
    """An API error from create or the helper propagates; nothing is tracked."""
    hook = RecordingHook("messages.create", "messages.stream")
    proxy = wrap(anthropic_client, hook)
    with pytest.raises(anthropic.BadRequestError):
        proxy.messages.create(model=FAIL_MODEL, max_tokens=5, messages=MESSAGES)
    with pytest.raises(anthropic.BadRequestError):  # noqa: SIM117 - the error is on entering
        with proxy.messages.stream(model=FAIL_MODEL, max_tokens=5, messages=MESSAGES):
            pass
    assert hook.calls == hook.ends == []


@SDK_EARLY_CLOSE
@pytest.mark.anyio
async def test_async_anthropic_create_and_streams(anthropic_fake: FakeAnthropic) -> None:
    """AsyncAnthropic: create, the async helper and an early-closed stream are each reported."""
    hook = ExtractingHook(ANTHROPIC_CONFIG)
    async with anthropic.AsyncAnthropic(
        base_url=anthropic_fake.url, api_key="test", max_retries=0
    ) as client:
        proxy = wrap(client, hook)
        assert isinstance(proxy, anthropic.AsyncAnthropic)
        result = await claude(proxy)
        assert result.usage.output_tokens == 15

        async with helper_stream(proxy) as stream:
            assert isinstance(stream, anthropic.AsyncMessageStream)
            types = [event.type async for event in stream]
        assert types[-1] == "message_stop"

        async with helper_stream(proxy) as stream:
            final = await stream.get_final_message()
        assert final.usage.input_tokens == 25

        raw = await claude(proxy, stream=True)
        assert (await raw.__anext__()).type == "message_start"
        await raw.close()
    tokens = [(p["input_tokens"], p["output_tokens"]) for p in hook.payloads]
    assert tokens == [(25, 15), (25, 15), (25, 15), (25, 1)]


# -- derived clients and helper streams --------------------------------------------------------


class Service:
    """A client of its own: with_options/copy return new clients, copy of data returns data."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout

    def with_options(self, *, timeout: float) -> Service:
        return Service(timeout)

    def copy(self) -> dict[str, float]:
        return {"timeout": self.timeout}

    def add(self, a: int, b: int) -> int:
        return a + b


def test_with_options_returns_a_client_tracked_by_the_same_hook() -> None:
    """with_options' client is wrapped with the same hook; a method returning data is not."""
    hook = RecordingHook("add")
    proxy: Any = TrackedProxy(Service(), extractor_hook=hook)
    derived = proxy.with_options(timeout=5.0)
    assert isinstance(derived, Service)
    assert type(derived) is not Service  # the proxy, seen as a Service
    assert derived.timeout == 5.0
    assert derived.add(2, 3) == 5
    assert proxy.copy() == {"timeout": 1.0}
    assert type(proxy.copy()) is dict
    assert [(s.path, s.result) for s in hook.calls] == [("add", 5)]


class HelperStream:
    """A helper stream that reads itself in get_final (as the SDK helpers do)."""

    def __init__(self) -> None:
        self._events = iter(["a", "b", "c"])
        self.seen: list[str] = []
        self.closed = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        event = next(self._events)
        self.seen.append(event)
        return event

    def get_final_text(self) -> str:
        for _ in self:  # the target's own iteration, invisible to a wrapper
            pass
        return "".join(self.seen)

    def close(self) -> None:
        self.closed = True


class Streamer:
    def stream(self) -> HelperStream:
        return HelperStream()


def test_get_final_reads_through_the_wrapper_once() -> None:
    """get_final_* drains through the wrapper: one end report with every event."""
    hook = RecordingHook("stream")
    proxy: Any = TrackedProxy(Streamer(), extractor_hook=hook)
    stream = proxy.stream()
    assert next(stream) == "a"
    assert stream.get_final_text() == "abc"
    stream.close()
    assert [(s.path, s.result) for s in hook.ends] == [("stream", ["a", "b", "c"])]
