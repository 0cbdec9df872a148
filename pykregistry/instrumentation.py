"""``@instrument``: a span around every call of a function.

    >>> import pykregistry
    >>> reg = pykregistry.Registry()
    >>> @pykregistry.instrument(registry=reg, level="debug", skip=("password",))
    ... def login(user, password):
    ...     return reg.get(reg.current_span()).fields
    >>> login("ada", "hunter2")
    {'user': 'ada'}

Works on plain functions, coroutine functions, generator functions and async
generator functions, and keeps their kind (``inspect.iscoroutinefunction``
and friends answer the same for the wrapper), name, docstring and signature.
"""

from __future__ import annotations

import functools
import inspect
import keyword
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from pykregistry import _default
from pykregistry.level import Level

if TYPE_CHECKING:
    from pykregistry._native import Callsite, Entered, Registry, Span

__all__ = ["instrument"]

F = TypeVar("F", bound=Callable[..., Any])

# A method's receiver is not recorded: its repr is rarely what you want on a
# span, and calling it on every call costs.
_RECEIVERS = frozenset({"self", "cls"})

# The field `ret=True` records the return value as.
_RETURN = "return"

# `Callsite.span()` takes the parent as a keyword, so a field of that name is
# recorded just after the span is made.
_RESERVED = frozenset({"parent"})


@overload
def instrument(
    func: F,
    /,
    *,
    registry: Registry | None = None,
    name: str | None = None,
    target: str | None = None,
    level: Level | str | int = Level.INFO,
    fields: Mapping[str, object] | None = None,
    skip: Iterable[str] = (),
    args: bool = True,
    ret: bool = False,
    err: bool = True,
) -> F: ...


@overload
def instrument(
    func: None = None,
    /,
    *,
    registry: Registry | None = None,
    name: str | None = None,
    target: str | None = None,
    level: Level | str | int = Level.INFO,
    fields: Mapping[str, object] | None = None,
    skip: Iterable[str] = (),
    args: bool = True,
    ret: bool = False,
    err: bool = True,
) -> Callable[[F], F]: ...


def instrument(
    func: F | None = None,
    /,
    *,
    registry: Registry | None = None,
    name: str | None = None,
    target: str | None = None,
    level: Level | str | int = Level.INFO,
    fields: Mapping[str, object] | None = None,
    skip: Iterable[str] = (),
    args: bool = True,
    ret: bool = False,
    err: bool = True,
) -> F | Callable[[F], F]:
    """Wraps each call of a function in a span, like ``tracing``'s
    ``#[instrument]``. Use it bare (``@instrument``) or with options
    (``@instrument(level="debug")``).

    - ``registry``: where the spans go; by default
      :func:`pykregistry.default_registry` (looked up at the first call).
    - ``name``: the span's name; by default the function's ``__qualname__``.
    - ``target``: by default the function's ``__module__``.
    - ``level``: ``Level.INFO`` by default.
    - ``fields``: fixed fields added to every span.
    - ``args``: record the arguments as fields, by parameter name, defaults
      included (``True``); ``False`` records none. ``*args`` is recorded as
      a tuple and ``**kwargs`` as a dict, each under its parameter's name. A
      method's leading ``self`` or ``cls`` is never recorded. Values follow
      the registry's rules: ``bool``, ``int``, ``float``, ``str`` and
      ``None`` as they are, anything else as its ``repr()``.
    - ``skip``: parameter names not to record (``ValueError`` at decoration
      for a name the function does not have).
    - ``ret``: record the return value as the field ``return`` (for a
      generator: the value of its ``return`` statement).
    - ``err``: record an exception that leaves the call on the span
      (``error=True``, ``exception.type``, ``exception.message``). Only
      ``Exception`` subclasses count: ``GeneratorExit``,
      ``KeyboardInterrupt``, ``SystemExit`` and ``asyncio.CancelledError``
      stop a call, they are not its errors. The exception always propagates
      unchanged.

    When the span is made and entered:

    - plain functions: for the call;
    - coroutine functions: from the first time the coroutine runs (when it
      is awaited or its task starts) to its end, in the task that runs it,
      so the span is current in that task only, across its ``await``\\ s;
    - generators and async generators: made when iteration starts, entered
      on every resume and exited at every ``yield`` (never current in the
      consumer between items), closed when the generator finishes, raises
      or is closed — from any thread or task, or by the garbage collector.

    The span's parent is the span current where the body starts running
    (for coroutines and generators, where they are first awaited or
    iterated). The metadata and the filter decision are fixed once per
    decorated function, in a :class:`~pykregistry.Callsite`. The function
    always runs: when the filter can never enable its spans, calls go
    straight to it; when a span directive may, a call the filter turns away
    gets a disabled span (no ID, nothing recorded).
    """
    options = _Options(
        registry=registry,
        name=name,
        target=target,
        level=level,
        fields=dict(fields or {}),
        skip=frozenset([skip] if isinstance(skip, str) else skip),
        args=args,
        ret=ret,
        err=err,
    )
    if func is None:
        return lambda f: cast(F, _decorate(f, options))
    return cast(F, _decorate(func, options))


# `Registry.instrument` (native) calls this with `registry=self`; it finds
# it in `_default`, so that native code imports nothing of this layer.
_default.instrument = instrument


class _Options:
    __slots__ = ("args", "err", "fields", "level", "name", "registry", "ret", "skip", "target")

    def __init__(
        self,
        *,
        registry: Registry | None,
        name: str | None,
        target: str | None,
        level: Level | str | int,
        fields: dict[str, object],
        skip: frozenset[str],
        args: bool,
        ret: bool,
        err: bool,
    ) -> None:
        self.registry = registry
        self.name = name
        self.target = target
        self.level = level
        self.fields = fields
        self.skip = skip
        self.args = args
        self.ret = ret
        self.err = err


def _decorate(func: Any, options: _Options) -> Any:
    if isinstance(func, staticmethod):
        return staticmethod(_decorate(func.__func__, options))
    if isinstance(func, classmethod):
        return classmethod(_decorate(func.__func__, options))
    if isinstance(func, type) or not callable(func):
        raise TypeError(
            f"instrument() wraps functions, not {type(func).__name__} {func!r}: "
            "decorate the methods of a class rather than the class"
        )
    plan = _Plan(func, options)
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(func):
        wrapper = _async_generator(func, plan)
    elif inspect.isgeneratorfunction(func):
        wrapper = _generator(func, plan)
    elif inspect.iscoroutinefunction(func):
        wrapper = _coroutine(func, plan)
    else:
        wrapper = _function(func, plan)
    return functools.wraps(func)(wrapper)


# === what a call records ===


class _Plan:
    """What each call of one decorated function records, worked out at
    decoration; the callsite is made at the first call."""

    __slots__ = (
        "bare",
        "enabled",
        "err",
        "extract",
        "field_names",
        "fixed",
        "level",
        "name",
        "params",
        "recorded",
        "registry",
        "ret",
        "signature",
        "target",
    )

    def __init__(self, func: Callable[..., Any], options: _Options) -> None:
        self.registry = options.registry
        named = _named(func)
        self.name = options.name or getattr(named, "__qualname__", None) or type(named).__qualname__
        module = getattr(named, "__module__", None)
        self.target = options.target if options.target is not None else module or ""
        self.level = options.level
        self.fixed = options.fields
        self.ret = options.ret
        self.err = options.err
        self.signature = _signature(func)
        self.params = list(self.signature.parameters.values()) if self.signature else []
        names = {p.name for p in self.params}
        unknown = options.skip - names
        if unknown and self.signature is not None:
            raise ValueError(
                f"instrument(skip=...) names {sorted(unknown)} that "
                f"{self.name}() does not take; its parameters are {sorted(names)}"
            )
        self.recorded = [
            p.name
            for i, p in enumerate(self.params)
            if options.args
            and p.name not in options.skip
            and not (
                i == 0
                and p.name in _RECEIVERS
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            )
        ]
        clash = set(self.recorded) & set(self.fixed)
        if clash:
            raise ValueError(
                f"instrument(fields=...) sets {sorted(clash)}, which are also "
                f"arguments of {self.name}(); skip the arguments or rename the fields"
            )
        if self.ret and (_RETURN in self.fixed or _RETURN in self.recorded):
            raise ValueError(
                f"instrument(ret=True) records the field {_RETURN!r}, which is already set"
            )
        self.field_names = (*self.recorded, *self.fixed, *((_RETURN,) if self.ret else ()))
        # Whether the callsite can make enabled spans; when it cannot, calls
        # go straight to the function. Known once `build()` has run.
        self.enabled = True
        # Both set by `build()`: `bare()` makes a span with the fixed fields
        # only; `extract(*args, **kwargs)` one with the arguments too (None
        # when no argument is recorded).
        self.bare: Callable[[], Span] | None = None
        self.extract: Callable[..., Span] | None = None

    def build(self) -> tuple[Callable[..., Span] | None, Callable[[], Span]]:
        """Makes the callsite (once) and the span makers."""
        if self.bare is None:
            registry = self.registry
            if registry is None:
                registry = _default.default_registry()
            callsite = registry.callsite(
                self.name, target=self.target, level=self.level, fields=self.field_names
            )
            fixed_plain = {k: v for k, v in self.fixed.items() if k not in _RESERVED}
            fixed_late = {k: v for k, v in self.fixed.items() if k in _RESERVED}
            bare: Callable[[], Span]
            if fixed_late:
                bare = _recording(functools.partial(callsite.span, **fixed_plain), fixed_late)
            elif fixed_plain:
                bare = functools.partial(callsite.span, **fixed_plain)
            else:
                bare = callsite.span
            if self.recorded:
                self.extract = _extractor(
                    self.name, self.params, self.recorded, callsite, fixed_plain, fixed_late
                ) or (lambda *args, **kwargs: bare())
            self.enabled = callsite.enabled
            self.bare = bare
        return self.extract, self.bare

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span:
        """A span for one call (not entered). ``build()`` has run."""
        extract, bare = self.extract, self.bare
        assert bare is not None
        if extract is None:
            return bare()
        try:
            return extract(*args, **kwargs)
        except TypeError:
            # The arguments do not fit the signature: the call itself will
            # raise TypeError, recorded on a span without argument fields.
            return bare()

    def record_return(self, span: Span, value: object) -> None:
        span.record(_RETURN, value)


def _named(func: Callable[..., Any]) -> Any:
    """What gives a span its default name and target: the function a
    :func:`functools.partial` wraps, the class of a callable object."""
    while isinstance(func, functools.partial):
        func = func.func
    if hasattr(func, "__qualname__"):
        return func
    return type(func)


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have none
        return None


def _recording(make: Callable[[], Span], late: dict[str, object]) -> Callable[[], Span]:
    def bare() -> Span:
        span = make()
        span.record(**late)
        return span

    return bare


def _extractor(
    name: str,
    params: list[inspect.Parameter],
    recorded: list[str],
    callsite: Callsite,
    fixed: dict[str, object],
    late: dict[str, object],
) -> Callable[..., Span] | None:
    """A function with the decorated function's parameters that makes the
    call's span from its arguments: Python binds them (defaults included)
    at C speed, as it does for the function itself.

    Generated from source, as :mod:`dataclasses` generates ``__init__``.
    ``None`` when the signature cannot be written as Python source (then no
    argument is recorded)."""
    taken = {p.name for p in params}
    prefix = "_pykr_"
    while any(n.startswith(prefix) for n in taken):
        prefix = "_" + prefix
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in taken):
        return None
    namespace: dict[str, Any] = {
        f"{prefix}span": callsite.span,
        f"{prefix}fixed": fixed,
        f"{prefix}late": late,
    }
    source_params = []
    for i, p in enumerate(params):
        if p.default is not p.empty:
            namespace[f"{prefix}d{i}"] = p.default
            p = p.replace(default=_SourceName(f"{prefix}d{i}"))
        source_params.append(p.replace(annotation=p.empty))
    signature = str(inspect.Signature(source_params))
    now = [n for n in recorded if n not in _RESERVED]
    then = [n for n in recorded if n in _RESERVED]
    call = ", ".join([f"{n}={n}" for n in now] + ([f"**{prefix}fixed"] if fixed else []))
    late_items = ", ".join([f"{n!r}: {n}" for n in then] + ([f"**{prefix}late"] if late else []))
    if late_items:
        body = (
            f"    {prefix}s = {prefix}span({call})\n"
            f"    {prefix}s.record(**{{{late_items}}})\n"
            f"    return {prefix}s\n"
        )
    else:
        body = f"    return {prefix}span({call})\n"
    fn_name = name.rpartition(".")[2] if name.rpartition(".")[2].isidentifier() else "call"
    source = f"def {fn_name}{signature}:\n{body}"
    try:
        exec(source, namespace)
    except SyntaxError:
        return None
    return cast("Callable[..., Span]", namespace[fn_name])


class _SourceName(str):
    """A default value written into generated source as a bare name."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _leave(entered: Span | Entered, exc: BaseException, err: bool) -> None:
    """Exits for an exception, recording it when ``err`` (the native exit
    records ``Exception`` subclasses only)."""
    if err:
        entered.__exit__(type(exc), exc, exc.__traceback__)
    else:
        entered.__exit__(None, None, None)


# === wrappers, by kind ===


def _unbuilt(*args: Any, **kwargs: Any) -> Span:
    """Stands for a span maker until the first call builds it."""
    raise AssertionError("instrument: span maker used before it was built")


def _function(func: Callable[..., Any], plan: _Plan) -> Callable[..., Any]:
    if not plan.err:
        return _function_general(func, plan)
    ret = plan.ret
    # Set at the first call (`on`: whether spans can be enabled at all).
    on: bool | None = None
    extract: Callable[..., Span] = _unbuilt
    bare: Callable[[], Span] = _unbuilt
    if not plan.recorded:

        def instrumented(*args: Any, **kwargs: Any) -> Any:
            nonlocal on, bare
            if on is None:
                bare = plan.build()[1]
                on = plan.enabled
            if not on:
                return func(*args, **kwargs)
            with bare() as span:
                result = func(*args, **kwargs)
                if ret:
                    span.record(_RETURN, result)
                return result

        return instrumented

    def instrumented_args(*args: Any, **kwargs: Any) -> Any:
        nonlocal on, extract, bare
        if on is None:
            built, bare = plan.build()
            extract = built or _unbuilt
            on = plan.enabled
        if not on:
            return func(*args, **kwargs)
        try:
            span = extract(*args, **kwargs)
        except TypeError:
            span = bare()
        with span:
            result = func(*args, **kwargs)
            if ret:
                span.record(_RETURN, result)
            return result

    return instrumented_args


def _function_general(func: Callable[..., Any], plan: _Plan) -> Callable[..., Any]:
    """``err=False``: an exception leaves the span unrecorded, so the span is
    exited by hand rather than by a ``with``."""
    ret, err = plan.ret, plan.err

    def instrumented(*args: Any, **kwargs: Any) -> Any:
        plan.build()
        if not plan.enabled:
            return func(*args, **kwargs)
        span = plan.start(args, kwargs)
        span.__enter__()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _leave(span, exc, err)
            raise
        try:
            if ret:
                plan.record_return(span, result)
        finally:
            span.__exit__(None, None, None)
        return result

    return instrumented


def _coroutine(func: Callable[..., Any], plan: _Plan) -> Callable[..., Any]:
    ret, err = plan.ret, plan.err
    if err and not ret:

        async def instrumented(*args: Any, **kwargs: Any) -> Any:
            plan.build()
            if not plan.enabled:
                return await func(*args, **kwargs)
            with plan.start(args, kwargs):
                return await func(*args, **kwargs)

        return instrumented

    async def instrumented_general(*args: Any, **kwargs: Any) -> Any:
        plan.build()
        if not plan.enabled:
            return await func(*args, **kwargs)
        span = plan.start(args, kwargs)
        span.__enter__()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            _leave(span, exc, err)
            raise
        try:
            if ret:
                plan.record_return(span, result)
        finally:
            span.__exit__(None, None, None)
        return result

    return instrumented_general


def _generator(
    func: Callable[..., Generator[Any, Any, Any]], plan: _Plan
) -> Callable[..., Generator[Any, Any, Any]]:
    # Drives the generator by hand (not `yield from`) so the span is entered
    # around each resume only. PEP 380's expansion of `yield from`, with an
    # enter and exit around every call into the inner generator.
    err, ret = plan.err, plan.ret

    def instrumented(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        plan.build()
        if not plan.enabled:
            return (yield from func(*args, **kwargs))
        span = plan.start(args, kwargs)
        try:
            entered = span.entered()
            enter, exit_ = entered.__enter__, entered.__exit__
            enter()
            try:
                gen = func(*args, **kwargs)
            except BaseException as exc:
                _leave(entered, exc, err)
                raise
            exit_(None, None, None)
            resume: Callable[[Any], Any] = gen.send
            value: Any = None
            while True:
                enter()
                try:
                    item = resume(value)
                except StopIteration as stop:
                    exit_(None, None, None)
                    if ret:
                        plan.record_return(span, stop.value)
                    return stop.value
                except BaseException as exc:
                    _leave(entered, exc, err)
                    raise
                exit_(None, None, None)
                try:
                    value = yield item
                except GeneratorExit:
                    enter()
                    try:
                        gen.close()
                    except BaseException as exc:
                        _leave(entered, exc, err)
                        raise
                    exit_(None, None, None)
                    raise
                except BaseException as exc:
                    resume, value = gen.throw, exc
                else:
                    resume = gen.send
        finally:
            span.close()

    return instrumented


def _async_generator(
    func: Callable[..., AsyncGenerator[Any, Any]], plan: _Plan
) -> Callable[..., AsyncGenerator[Any, Any]]:
    err = plan.err

    async def instrumented(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        # No shortcut when disabled (there is no `yield from` for async
        # generators): the disabled span makes entering and exiting no-ops.
        plan.build()
        span = plan.start(args, kwargs)
        try:
            entered = span.entered()
            enter, exit_ = entered.__enter__, entered.__exit__
            enter()
            try:
                agen = func(*args, **kwargs)
            except BaseException as exc:
                _leave(entered, exc, err)
                raise
            exit_(None, None, None)
            resume: Callable[[Any], Any] = agen.asend
            value: Any = None
            while True:
                enter()
                try:
                    item = await resume(value)
                except StopAsyncIteration:
                    exit_(None, None, None)
                    return
                except BaseException as exc:
                    _leave(entered, exc, err)
                    raise
                exit_(None, None, None)
                try:
                    value = yield item
                except GeneratorExit:
                    enter()
                    try:
                        await agen.aclose()
                    except BaseException as exc:
                        _leave(entered, exc, err)
                        raise
                    exit_(None, None, None)
                    raise
                except BaseException as exc:
                    resume, value = agen.athrow, exc
                else:
                    resume = agen.asend
        finally:
            span.close()

    return instrumented
