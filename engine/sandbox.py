"""Sandbox for designer-written Python: script tasks, gateway conditions, timer and DMN expressions.

Why this exists: SpiffWorkflow's default script engine runs these snippets with bare ``eval``/``exec``,
i.e. full Python with access to files, sockets and the whole process.  Process designers are not
trusted that far, so everything they write goes through three layers here:

1. RestrictedPython compiles the code (no imports, no names or attributes starting with ``_``, every
   attribute/item access routed through guard functions), extended by our own AST policy that refuses
   a few more constructs at compile time (``class``, ``str.format``, ``eval``...).
2. The same policy inserts a budget check (``_qz_tick_``) at the start of every loop body, function
   body, lambda and comprehension step, so ``while True: pass`` ends with :class:`ScriptTimeout`
   within the time budget without signals (scripts run on web and worker threads).
3. Operators and methods that can allocate unboundedly in one C-level step (``*``, ``**``, ``<<``,
   ``+`` on sequences, ``%``-formatting, ``str.join``...) are routed through checked helpers with
   size caps, and scripts run on a deep copy of the task data so a refused script changes nothing.

What this cannot do (see :class:`Limits`): a single C-level builtin cannot be interrupted, so its cost
is bounded only by the size caps -- e.g. sorting a list of a million references to one huge string
takes minutes.  Aggregate memory is watched only as process RSS growth.  Against hostile designers,
run scripts in worker processes with OS limits (RLIMIT_AS/RLIMIT_CPU) as well.
"""

from __future__ import annotations

import ast
import copy
import decimal
import functools
import importlib
import logging
import math
import operator
import os
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from types import CodeType, ModuleType
from typing import Any

from RestrictedPython import compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment

logger = logging.getLogger(__name__)

__all__ = [
    "Limits",
    "SandboxEnvironment",
    "SandboxScriptEngine",
    "ScriptRefused",
    "ScriptTimeout",
    "check_source",
    "find_script_refusal",
    "make_script_engine",
]


class ScriptRefused(Exception):
    """The sandbox would not compile the code, or the code tried something forbidden while running.

    A distinct type so the engine can turn it into an incident instead of a generic script error.
    """


class ScriptTimeout(ScriptRefused):
    """A resource budget (wall-clock time, loop/call steps, recursion depth, memory) was exceeded."""


@dataclass(frozen=True)
class Limits:
    """Budgets for one script run; frozen so one instance can be shared by all threads."""

    time_budget: float = 2.0
    """Wall-clock seconds a single evaluate/execute may take."""
    max_steps: int = 5_000_000
    """Loop iterations + function calls + comprehension items per run; deterministic, unlike time."""
    max_size: int = 1_000_000
    """Items in one list/tuple or characters in one string that a single operation may create."""
    max_int_bits: int = 100_000
    """Bits of an integer produced by ``*``, ``**`` or ``<<``; bigger ints are only good for DoS."""
    max_data_items: int = 2_000_000
    """Expanded item count (shared objects counted each time they occur) of formatted values and of the
    data a script leaves behind: ``[big] * n`` is cheap to build but huge to print, copy or store."""
    max_data_chars: int = 64_000_000
    """Expanded character count of the same; generous so large legitimate fields pass through."""
    max_memory_growth: int | None = 512 * 1024 * 1024
    """Growth of the process's resident memory during one run, measured from the first check ~10 ms in
    and then every ~10 ms (Linux /proc only; None disables).  Process-wide, hence generous."""
    max_decimal_exponent: int = 9_999
    """Emax/Emin of the Decimal context scripts run in; ``int(Decimal('1e999999'))`` takes 30 s."""


# ---------------------------------------------------------------------------------------------------
# Compile-time policy
# ---------------------------------------------------------------------------------------------------

_TICK = "_qz_tick_"

# Never legitimate in a designer's script, whatever the context: refused wherever the name appears.
_FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
        "breakpoint",
    }
)
# Plausible as task-data field names ("type", "open", "input"...), so only calling them is refused.
_FORBIDDEN_CALLS = _FORBIDDEN_NAMES | frozenset(
    {
        "open",
        "dir",
        "type",
        "input",
        "help",
        "exit",
        "quit",
        "super",
        "object",
        "memoryview",
        "classmethod",
        "staticmethod",
        "property",
        "iter",
        "reload",
    }
)
# ``str.format`` walks attributes ("{0.__class__}"), translate/maketrans can amplify, mro reaches object.
_BLOCKED_ATTRS = frozenset({"format", "format_map", "translate", "maketrans", "mro", "as_integer_ratio"})
_BLOCKED_ATTRS |= INSPECT_ATTRIBUTES

# Binary operators whose result can be far larger than their operands, and their checked helpers.
_CHECKED_BINOPS: dict[type[ast.operator], str] = {
    ast.Mult: "_qz_mul_",
    ast.Pow: "_qz_pow_",
    ast.LShift: "_qz_lshift_",
    ast.Add: "_qz_add_",
    ast.Mod: "_qz_mod_",
}


def _located(new: ast.AST, like: ast.AST) -> ast.AST:
    """Give generated nodes the source position of the node they replace.

    RestrictedPython compiles right after the policy runs, so missing positions would fail there.
    """
    for node in ast.walk(new):
        if "lineno" in node._attributes and not hasattr(node, "lineno"):
            node.lineno = getattr(like, "lineno", 1)
            node.col_offset = getattr(like, "col_offset", 0)
            node.end_lineno = getattr(like, "end_lineno", node.lineno)
            node.end_col_offset = getattr(like, "end_col_offset", node.col_offset)
    return new


def _call(name: str, args: list[ast.expr], like: ast.AST) -> ast.Call:
    """Build ``name(*args)`` positioned like ``like``."""
    call = ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=args, keywords=[])
    _located(call, like)
    return call


def _tick_stmt(like: ast.AST) -> ast.Expr:
    stmt = ast.Expr(value=_call(_TICK, [], like))
    _located(stmt, like)
    return stmt


def _is_numeric_constant(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float, complex)


def _is_simple(node: ast.expr) -> bool:
    """True for side-effect-free target parts (``a``, ``a['k']``, ``a.b[0]``) that may be evaluated twice."""
    if isinstance(node, ast.Name | ast.Constant):
        return True
    if isinstance(node, ast.Attribute):
        return _is_simple(node.value)
    if isinstance(node, ast.Subscript):
        return _is_simple(node.value) and _is_simple(node.slice)
    return False


class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's rules plus budget ticks, checked operators and a few extra refusals."""

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> ast.AST:
        self.error(node, "import is not allowed")
        return node

    visit_ImportFrom = visit_Import

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.error(node, "class definitions are not allowed")
        return node

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in _FORBIDDEN_NAMES:
            self.error(node, f"'{node.id}' is not allowed")
            return node
        return super().visit_Name(node)

    def visit_Call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Name) and node.func.id in _FORBIDDEN_CALLS:
            self.error(node, f"calling '{node.func.id}' is not allowed")
            return node
        return super().visit_Call(node)

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_") or node.attr in _BLOCKED_ATTRS:
            hint = " (use an f-string)" if node.attr in ("format", "format_map") else ""
            self.error(node, f"access to '{node.attr}' is not allowed{hint}")
            return node  # one message per attribute chain: the outermost name is the telling one
        return super().visit_Attribute(node)

    # -- budget ticks -------------------------------------------------------------------------------

    def visit_While(self, node: ast.While) -> Any:
        node = super().visit_While(node)
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_For(self, node: ast.For) -> Any:
        node = super().visit_For(node)
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        node = super().visit_FunctionDef(node)
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_Lambda(self, node: ast.Lambda) -> Any:
        node = super().visit_Lambda(node)
        # The tick returns True, so ``tick() and body`` evaluates to the body.
        node.body = _located(ast.BoolOp(op=ast.And(), values=[_call(_TICK, [], node), node.body]), node)
        return node

    def visit_comprehension(self, node: ast.comprehension) -> Any:
        node = super().visit_comprehension(node)
        # A leading condition runs once per item, also when a C builtin (sum, list...) drives it.
        node.ifs.insert(0, _call(_TICK, [], node.iter))
        return node

    # -- size-checked operators ---------------------------------------------------------------------

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        node = super().visit_BinOp(node)
        helper = _CHECKED_BINOPS.get(type(node.op))
        if helper is None:
            return node
        numeric = _is_numeric_constant(node.left), _is_numeric_constant(node.right)
        if isinstance(node.op, ast.Add) and any(numeric):
            return node  # ``x + 1`` cannot amplify; keep the hot loop counter fast
        if isinstance(node.op, ast.Mod) and numeric[0]:
            return node
        return _call(helper, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        target = node.target
        if isinstance(target, ast.Subscript) and _is_simple(target.value) and _is_simple(target.slice):
            # ``d['n'] += 1`` is common in scripts but refused by RestrictedPython; rewrite it to
            # ``d['n'] = d['n'] + 1`` (safe because the target parts have no side effects).
            load = copy.deepcopy(target)
            load.ctx = ast.Load()
            assign = ast.Assign(targets=[target], value=ast.BinOp(left=load, op=node.op, right=node.value))
            return self.visit(_located(assign, node))
        return super().visit_AugAssign(node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> Any:
        node = super().visit_FormattedValue(node)
        spec = node.format_spec if node.format_spec is not None else ast.Constant(value="")
        value = _call("_qz_format_", [node.value, ast.Constant(value=node.conversion), spec], node)
        return _located(ast.FormattedValue(value=value, conversion=-1, format_spec=None), node)


@dataclass(frozen=True)
class _Compiled:
    code: CodeType | None
    errors: tuple[str, ...]
    may_mutate: bool


def _prepare_source(source: str, mode: str) -> str:
    # BPMN/DMN editors often indent or pad snippets; plain eval() tolerates that, the parser doesn't.
    return source.strip() if mode == "eval" else textwrap.dedent(source)


@functools.lru_cache(maxsize=4096)
def _compile(source: str, mode: str) -> _Compiled:
    """Compile once per (source, mode): the same gateway condition is evaluated thousands of times."""
    text = _prepare_source(source, mode)
    compiler = compile_restricted_eval if mode == "eval" else compile_restricted_exec
    try:
        result = compiler(text, filename="<string>", policy=_Policy)
    except SyntaxError as err:  # raised by the final compile() step, e.g. 'return' outside function
        return _Compiled(None, (f"Line {err.lineno}: SyntaxError: {err.msg}",), False)
    except (ValueError, RecursionError, MemoryError) as err:
        return _Compiled(None, (f"cannot compile: {err.__class__.__name__}: {err}",), False)
    errors = tuple(dict.fromkeys(result.errors))
    if errors or result.code is None:
        return _Compiled(None, errors or ("cannot compile",), False)
    # Expressions cannot assign items, so only a method call (items.append...) can change task data.
    may_mutate = any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        for node in ast.walk(ast.parse(text, mode=mode))
    )
    return _Compiled(result.code, (), may_mutate)


def _check_mode(mode: str) -> None:
    if mode not in ("exec", "eval"):
        raise ValueError(f"mode must be 'exec' or 'eval', not {mode!r}")


def check_source(source: str, mode: str = "exec") -> list[str]:
    """Compile ``source`` under the sandbox rules without running it; return error messages ([] = OK).

    Used at deploy time so a bad script is rejected before anything is stored.
    """
    _check_mode(mode)
    if not isinstance(source, str):
        return [f"source must be a string, not {type(source).__name__}"]
    return list(_compile(source, mode).errors)


def _compiled_or_refuse(source: str, mode: str) -> _Compiled:
    if not isinstance(source, str):
        raise ScriptRefused(f"script must be a string, not {type(source).__name__}")
    compiled = _compile(source, mode)
    if compiled.errors:
        raise ScriptRefused("; ".join(compiled.errors))
    return compiled


# ---------------------------------------------------------------------------------------------------
# Run-time helpers available to scripts
# ---------------------------------------------------------------------------------------------------


# The moment the current unit of work runs at (engine.work sets it): every script of one command sees
# one "now", and a timer fired by a worker for a later moment sees that moment, not the wall clock.
CLOCK: ContextVar[datetime | None] = ContextVar("qizhi_script_clock", default=None)


@contextmanager
def script_clock(moment: datetime) -> Iterator[None]:
    """Scripts run inside this block see ``moment`` as now()."""
    token = CLOCK.set(moment)
    try:
        yield
    finally:
        CLOCK.reset(token)


def now() -> datetime:
    """Current time, timezone-aware UTC, so stored timestamps are unambiguous."""
    return CLOCK.get() or datetime.now(UTC)


def today() -> date:
    """Today's calendar date in the server's local time zone: form dates are local calendar dates."""
    moment = CLOCK.get()
    return moment.astimezone().date() if moment else date.today()


class _DecimalType(type):
    """Metaclass so ``isinstance(x, Decimal)`` still works against the real decimal.Decimal."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, decimal.Decimal)


class Decimal(metaclass=_DecimalType):
    """``Decimal(...)`` for scripts: a real decimal.Decimal, refused when its exponent is extreme.

    The constructor is exact and ignores the (bounded) context scripts run in, and converting
    ``Decimal('1e999999')`` to int takes ~30 s of uninterruptible C time.
    """

    def __new__(cls, value: Any = "0") -> decimal.Decimal:  # type: ignore[misc]
        number = decimal.Decimal(value)
        bound = decimal.getcontext().Emax
        if number.is_finite() and number and not -bound <= number.adjusted() <= bound:
            raise ScriptRefused(f"Decimal exponent out of range (limit ±{bound})")
        return number


# C code such as datetime.strftime/strptime imports helper modules through the *calling frame's*
# ``__import__``; scripts themselves can never name ``__import__`` (underscore) nor use ``import``.
_C_HELPER_MODULES = frozenset({"time", "_strptime"})


def _internal_import(name: str, *args: Any, **kwargs: Any) -> ModuleType:
    if name not in _C_HELPER_MODULES:
        raise ScriptRefused("import is not allowed")
    return importlib.import_module(name)


def _apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """RestrictedPython routes ``f(*a, **kw)`` calls here; nothing extra to check."""
    return func(*args, **kwargs)


_SEQUENCES = (str, bytes, list, tuple)
_CONTAINERS = (list, tuple, dict, set, frozenset)
_INT_PAIR = (int, int)
_SCALARS = frozenset({int, float, bool, complex, decimal.Decimal})  # exact types: subclasses get checked
_SUM_STARTS = (int, float, complex, decimal.Decimal, timedelta)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
}
_GROWING_METHODS = frozenset(
    {"join", "replace", "ljust", "rjust", "center", "zfill", "expandtabs", "extend", "to_bytes", "from_bytes"}
)
_MEMORY_CHECK_INTERVAL = 0.01

try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _PAGE_SIZE = 4096


def _resident_bytes() -> int | None:
    """Resident set size of this process, or None where /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_STATIC_BUILTINS: dict[str, Any] = {
    # plain values and pure functions
    "abs": abs,
    "all": all,
    "any": any,
    "bool": bool,
    "callable": callable,
    "chr": chr,
    "dict": dict,
    "divmod": divmod,
    "enumerate": enumerate,
    "filter": filter,
    "float": float,
    "frozenset": frozenset,
    "int": int,
    "isinstance": isinstance,
    "len": len,
    "list": list,
    "map": map,
    "max": max,
    "min": min,
    "next": next,
    "ord": ord,
    "reversed": reversed,
    "set": set,
    "sorted": sorted,
    "str": str,
    "tuple": tuple,
    "zip": zip,
    "bin": bin,
    "hex": hex,
    "oct": oct,
    # dates and numbers
    "datetime": datetime,
    "date": date,
    "timedelta": timedelta,
    "timezone": timezone,
    "now": now,
    "today": today,
    "Decimal": Decimal,
    "floor": math.floor,
    "ceil": math.ceil,
    # exceptions scripts may raise or catch
    "Exception": Exception,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "IndexError": IndexError,
    "LookupError": LookupError,
    "ArithmeticError": ArithmeticError,
    "ZeroDivisionError": ZeroDivisionError,
    "OverflowError": OverflowError,
    "RuntimeError": RuntimeError,
    "AssertionError": AssertionError,
    "NameError": NameError,
    "AttributeError": AttributeError,
    "StopIteration": StopIteration,
    # RestrictedPython plumbing that needs no per-run state
    "__import__": _internal_import,
    "_getitem_": operator.getitem,
    "_getiter_": iter,
    "_apply_": _apply,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
}


class _PrintSink:
    """Target of RestrictedPython's ``print`` rewriting: output goes to the log, never to stdout."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._parts: list[str] = []
        self._size = 0

    def _call_print(self, *objects: Any, sep: str = " ", end: str = "\n", **_ignored: Any) -> None:
        for obj in objects:
            self._run.check_expanded(obj)
        text = str(sep).join(str(obj) for obj in objects) + str(end)
        logger.info("script print: %s", text.rstrip("\n"))
        if self._size + len(text) <= self._run.limits.max_size:
            self._parts.append(text)
            self._size += len(text)

    def __call__(self) -> str:
        return "".join(self._parts)


class _Run:
    """State of one evaluate/execute call: the budget and the guard functions bound to it.

    Per run rather than per environment because the compiled code is shared across threads.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.tripped: ScriptRefused | None = None
        self.steps_left = limits.max_steps
        start = time.monotonic()
        self.deadline = start + limits.time_budget
        self.rss_start: int | None = None  # read lazily: /proc costs ~10 us, most runs take less
        self.next_check = min(self.deadline, start + _MEMORY_CHECK_INTERVAL)

    # -- budget -------------------------------------------------------------------------------------

    def refuse(self, message: str, kind: type[ScriptRefused] = ScriptRefused) -> ScriptRefused:
        """Build the exception and remember it: a script that catches it must still fail."""
        exc = kind(message)
        if self.tripped is None:
            self.tripped = exc
        return exc

    def tick(self) -> bool:
        """Called at every loop iteration, function call and comprehension item."""
        self.steps_left -= 1
        if self.steps_left < 0 or time.monotonic() >= self.next_check:
            self._check_budget()
        return True

    def _check_budget(self) -> None:
        if self.steps_left < 0:
            raise self.refuse(
                f"script exceeded its step budget of {self.limits.max_steps} loop iterations and calls",
                ScriptTimeout,
            )
        moment = time.monotonic()
        if moment >= self.deadline:
            raise self.refuse(
                f"script exceeded its time budget of {self.limits.time_budget:g} s", ScriptTimeout
            )
        self.next_check = min(self.deadline, moment + _MEMORY_CHECK_INTERVAL)
        if self.limits.max_memory_growth is None:
            return
        rss = _resident_bytes()
        if rss is None:
            return
        if self.rss_start is None:
            self.rss_start = rss  # baseline at the first check, ~10 ms into the run
        elif rss - self.rss_start > self.limits.max_memory_growth:
            raise self.refuse(
                f"script exceeded its memory budget of {self.limits.max_memory_growth // (1024 * 1024)} MiB",
                ScriptTimeout,
            )

    # -- size checks --------------------------------------------------------------------------------

    def check_len(self, size: int, what: str = "items") -> None:
        if size > self.limits.max_size:
            raise self.refuse(f"result would have {size} {what}; the limit is {self.limits.max_size}")

    def check_bits(self, bits: float) -> None:
        if bits > self.limits.max_int_bits:
            raise self.refuse(
                f"integer result would have about {int(bits)} bits; the limit is {self.limits.max_int_bits}"
            )

    def check_expanded(self, value: Any, what: str = "value") -> None:
        """Refuse values whose fully expanded size (shared objects counted each time) is too big.

        ``[big] * n`` or a loop appending the same list costs little memory, but repr(), JSON or
        deepcopy would expand it; walking with an early stop bounds that cost up front.
        """
        if not isinstance(value, _CONTAINERS):
            if isinstance(value, str | bytes) and len(value) > self.limits.max_data_chars:
                raise self.refuse(f"{what} is too large ({len(value)} characters)")
            return
        items_left, chars_left = self.limits.max_data_items, self.limits.max_data_chars
        stack = [value]
        while stack:
            item = stack.pop()
            items_left -= 1
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, _CONTAINERS):
                stack.extend(item)
            elif isinstance(item, str | bytes):
                chars_left -= len(item)
            if items_left < 0 or chars_left < 0:
                raise self.refuse(
                    f"{what} is too large (more than {self.limits.max_data_items} items "
                    f"or {self.limits.max_data_chars} characters, counting repeats)"
                )

    # -- checked operators --------------------------------------------------------------------------
    # Each check_* raises before the operation would allocate too much; the operators then run as usual.

    def check_mul(self, a: Any, b: Any) -> None:
        if isinstance(a, int) and isinstance(b, int):
            self.check_bits(a.bit_length() + b.bit_length())
        elif isinstance(b, int) and isinstance(a, _SEQUENCES):
            self._check_repeat(a, b)
        elif isinstance(a, int) and isinstance(b, _SEQUENCES):
            self._check_repeat(b, a)

    def _check_repeat(self, seq: Any, times: int) -> None:
        self.check_len(len(seq) * times, "characters" if isinstance(seq, str | bytes) else "items")
        if isinstance(seq, list | tuple) and times > 1 and len(seq) <= 16:
            # one level of aliasing: [[0] * 1000] * 1000 is cheap to build but huge to print or store
            inner = sum(len(item) for item in seq if isinstance(item, _SEQUENCES + (dict, set)))
            self.check_len((len(seq) + inner) * times, "nested items")

    def check_pow(self, a: Any, b: Any) -> None:
        if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
            self.check_bits(b * math.log2(abs(a)))

    def check_lshift(self, a: Any, b: Any) -> None:
        if isinstance(a, int) and isinstance(b, int) and a:
            self.check_bits(a.bit_length() + b)

    def check_add(self, a: Any, b: Any) -> None:
        if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
            self.check_len(len(a) + len(b))

    def check_mod(self, a: Any, b: Any) -> None:
        if not isinstance(a, str | bytes):
            return
        text = a if isinstance(a, str) else a.decode("latin-1")
        widths = 0
        for width, precision in _PERCENT_SPEC.findall(text):
            if "*" in (width, precision):
                raise self.refuse("'*' widths in %-formatting are not allowed")
            widths += int(width or 0) + int(precision or 0)
        self.check_len(widths, "characters of padding")
        self.check_expanded(b, "formatted value")

    def mul(self, a: Any, b: Any) -> Any:
        kinds = type(a), type(b)
        if kinds == _INT_PAIR:
            if a.bit_length() + b.bit_length() > self.limits.max_int_bits:
                self.check_mul(a, b)  # raises with the message
            return a * b
        if kinds[0] in _SCALARS and kinds[1] in _SCALARS:  # float/Decimal math cannot amplify
            return a * b
        self.check_mul(a, b)
        return a * b

    def pow(self, a: Any, b: Any, mod: Any = None) -> Any:
        if mod is None:
            self.check_pow(a, b)
            return a**b
        # one modular multiplication per exponent bit: pow(3, 2**20000, 2**20000 + 1) takes minutes
        work = b.bit_length() * max(mod.bit_length(), 1) if isinstance(b, int) and isinstance(mod, int) else 0
        if work > 64 * self.limits.max_int_bits:
            raise self.refuse("pow() with this exponent and modulus would take too long")
        return pow(a, b, mod)

    def lshift(self, a: Any, b: Any) -> Any:
        self.check_lshift(a, b)
        return a << b

    def add(self, a: Any, b: Any) -> Any:
        if type(a) not in _SCALARS:
            self.check_add(a, b)
        return a + b

    def mod(self, a: Any, b: Any) -> Any:
        self.check_mod(a, b)
        return a % b

    def inplacevar(self, op: str, target: Any, value: Any) -> Any:
        """``x += y`` and friends (RestrictedPython rewrites them to a call of this)."""
        if op == "+=" and type(target) in _SCALARS:  # the loop-counter case, kept cheap
            return target + value
        operation = _INPLACE.get(op)
        if operation is None:
            raise self.refuse(f"operator {op} is not supported")
        check = _INPLACE_CHECKS.get(op)
        if check is not None:
            check(self, target, value)
        return operation(target, value)

    def format(self, value: Any, conversion: int, spec: str) -> str:
        """f-string replacement field: same result as Python, with the padding and size checked."""
        self.check_expanded(value, "formatted value")
        if conversion == ord("r"):
            value = repr(value)
        elif conversion == ord("s"):
            value = str(value)
        elif conversion == ord("a"):
            value = ascii(value)
        for digits in _DIGITS.findall(spec):
            if len(digits) > 9 or int(digits) > self.limits.max_size:
                raise self.refuse(f"format width or precision {digits} is too large")
        return format(value, spec)

    # -- checked builtins ---------------------------------------------------------------------------

    def range(self, *args: int) -> Iterable[int]:
        """Real range when small; a counted iterator when huge so C consumers (sum, list) tick too."""
        span = range(*args)
        try:
            small = len(span) <= self.limits.max_size
        except OverflowError:
            small = False
        return span if small else self._counted(span)

    def _counted(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            self.tick()
            yield item

    def sum(self, items: Iterable[Any], /, start: Any = 0) -> Any:
        if not isinstance(start, _SUM_STARTS):
            raise self.refuse("sum() only adds numbers and timedeltas; build lists and strings in a loop")
        return sum(items, start)

    def round(self, number: Any, ndigits: int | None = None) -> Any:
        # round(5, -10**9) computes 10**(10**9) internally for ints
        if isinstance(ndigits, int) and abs(ndigits) > 5_000:
            raise self.refuse("round() ndigits must be between -5000 and 5000")
        return round(number) if ndigits is None else round(number, ndigits)

    def repr(self, value: Any) -> str:
        self.check_expanded(value, "value passed to repr()")
        return repr(value)

    # -- guards -------------------------------------------------------------------------------------

    def getattr(self, obj: Any, name: str) -> Any:
        """``obj.name`` in a script: underscore names and blocked attributes are refused."""
        if not isinstance(name, str) or name.startswith("_") or name in _BLOCKED_ATTRS:
            raise self.refuse(f"access to '{name}' is not allowed")
        value = getattr(obj, name)
        if name in _GROWING_METHODS:
            return self._checked_method(obj, name, value)
        return value

    def _checked_method(self, obj: Any, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        if name == "from_bytes" and (obj is int or isinstance(obj, int)):
            return _bind(_checked_from_bytes, self, method)
        if obj is str or obj is bytes or obj is list or obj is int:
            raise self.refuse(f"call {name}() on a value, not on the type '{obj.__name__}'")
        if isinstance(obj, str | bytes):
            return _bind(_TEXT_CHECKS[name], self, obj, method)
        if isinstance(obj, list) and name == "extend":
            return _bind(_checked_extend, self, obj)
        if isinstance(obj, int) and name == "to_bytes":
            return _bind(_checked_to_bytes, self, method)
        return method

    def write(self, obj: Any) -> Any:
        """Target of ``x[k] = v`` / ``del x[k]`` / ``x.a = v``: only task-data containers are writable."""
        if isinstance(obj, dict | list):
            return obj
        raise self.refuse(f"cannot modify a value of type '{type(obj).__name__}' in a script")

    def print_sink(self, _getattr: Any = None) -> _PrintSink:
        return _PrintSink(self)

    def namespace(self, *layers: Mapping[str, Any]) -> dict[str, Any]:
        """Globals for one run: budget-bound helpers < ``layers`` (lowest first) < guards.

        The shared static whitelist is ``__builtins__``; helpers bound to this run's budget live in the
        globals instead, so nothing is copied per run.  Data may shadow ``range``/``sum``... as in
        Python, but never the guards: their ``_`` names cannot occur in the data layers.
        """
        namespace: dict[str, Any] = {
            "range": self.range,
            "sum": self.sum,
            "pow": self.pow,
            "repr": self.repr,
            "round": self.round,
        }
        for layer in layers:
            namespace.update(layer)
        namespace.update(
            {
                "__builtins__": _STATIC_BUILTINS,
                _TICK: self.tick,
                "_qz_mul_": self.mul,
                "_qz_pow_": self.pow,
                "_qz_lshift_": self.lshift,
                "_qz_add_": self.add,
                "_qz_mod_": self.mod,
                "_qz_format_": self.format,
                "_getattr_": self.getattr,
                "_write_": self.write,
                "_inplacevar_": self.inplacevar,
                "_print_": self.print_sink,
            }
        )
        return namespace

    def run(self, code: CodeType, namespace: dict[str, Any], mode: str) -> Any:
        """Run compiled code inside a bounded Decimal context and apply the budget verdict."""
        try:
            with decimal.localcontext(_decimal_context(self.limits.max_decimal_exponent)):
                result = eval(code, namespace) if mode == "eval" else exec(code, namespace)
        except Exception as err:
            if self.tripped is not None and self.tripped is not err:
                raise self.tripped from None
            if isinstance(err, RecursionError):
                raise self.refuse("recursion too deep", ScriptTimeout) from err
            raise
        if self.tripped is not None:
            raise self.tripped
        return result


_INPLACE_CHECKS: dict[str, Callable[[_Run, Any, Any], None]] = {
    "+=": _Run.check_add,
    "*=": _Run.check_mul,
    "**=": _Run.check_pow,
    "<<=": _Run.check_lshift,
    "%=": _Run.check_mod,
}


def _bind(check: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """Pre-bind a checker's arguments in a closure.

    Not functools.partial: its public ``.args`` would hand the script our _Run object.
    """

    def checked(*args: Any, **kwargs: Any) -> Any:
        return check(*bound, *args, **kwargs)

    return checked


@functools.lru_cache(maxsize=8)
def _decimal_context(bound: int) -> decimal.Context:
    """Template context (localcontext() copies it) with a bounded exponent range."""
    return decimal.Context(prec=28, Emax=bound, Emin=-bound)


def _checked_extend(run: _Run, target: list[Any], items: Iterable[Any]) -> None:
    values = items if isinstance(items, list | tuple | str | dict | set) else list(items)
    run.check_len(len(target) + len(values))
    target.extend(values)


def _checked_to_bytes(
    run: _Run, method: Callable[..., bytes], length: int = 1, *args: Any, **kw: Any
) -> bytes:
    run.check_len(length, "bytes")
    return method(length, *args, **kw)


def _checked_from_bytes(run: _Run, method: Callable[..., int], data: Any, *args: Any, **kw: Any) -> int:
    # big ints make //, % and divmod quadratic; everything else caps them at max_int_bits
    run.check_bits(len(data) * 8 if hasattr(data, "__len__") else 0)
    return method(data, *args, **kw)


def _text_join(run: _Run, sep: Any, method: Callable[..., Any], parts: Iterable[Any]) -> Any:
    items = list(parts)
    total = sum(len(p) for p in items if isinstance(p, str | bytes)) + len(sep) * max(len(items) - 1, 0)
    run.check_len(total, "characters")
    return method(items)


def _text_replace(
    run: _Run, text: Any, method: Callable[..., Any], old: Any, new: Any, count: int = -1
) -> Any:
    if isinstance(old, str | bytes) and isinstance(new, str | bytes) and len(new) > len(old):
        hits = text.count(old) if old else len(text) + 1
        if count >= 0:
            hits = min(hits, count)
        run.check_len(len(text) + hits * (len(new) - len(old)), "characters")
    return method(old, new, count)


def _text_pad(run: _Run, text: Any, method: Callable[..., Any], width: int, *args: Any) -> Any:
    run.check_len(width, "characters")
    return method(width, *args)


def _text_expandtabs(run: _Run, text: Any, method: Callable[..., Any], tabsize: int = 8) -> Any:
    tab = "\t" if isinstance(text, str) else b"\t"
    run.check_len(len(text) + text.count(tab) * max(tabsize, 0), "characters")
    return method(tabsize)


_TEXT_CHECKS: dict[str, Callable[..., Any]] = {
    "join": _text_join,
    "replace": _text_replace,
    "ljust": _text_pad,
    "rjust": _text_pad,
    "center": _text_pad,
    "zfill": _text_pad,
    "expandtabs": _text_expandtabs,
}


# ---------------------------------------------------------------------------------------------------
# SpiffWorkflow integration
# ---------------------------------------------------------------------------------------------------


def _is_hidden(key: Any) -> bool:
    # Scripts cannot name these (RestrictedPython refuses '_' names), and a task-data key such as
    # '_getattr_' must never shadow a guard, so they stay out of the namespace and are kept as they were.
    return not isinstance(key, str) or key.startswith("_")


class SandboxEnvironment(BasePythonScriptEngineEnvironment):
    """Drop-in replacement for SpiffWorkflow's TaskDataEnvironment that runs code in the sandbox.

    Same semantics: task data are the script's variables, assignments update the task data, and
    afterwards no functions, modules or ``__builtins__`` are left behind.  Unlike the original, a
    script runs on a deep copy that is written back only when it succeeds.
    """

    def __init__(
        self,
        environment_globals: Mapping[str, Any] | None = None,
        *,
        time_budget: float = 2.0,
        limits: Limits | None = None,
    ) -> None:
        extra = dict(environment_globals or {})
        modules = [name for name, value in extra.items() if isinstance(value, ModuleType)]
        if modules:
            raise ValueError(f"modules cannot be exposed to scripts: {', '.join(modules)}")
        super().__init__(extra)
        self.limits = limits or Limits(time_budget=time_budget)

    def evaluate(
        self, expression: str, context: dict[str, Any], external_context: Mapping[str, Any] | None = None
    ) -> Any:
        """Return the value of ``expression`` with the task data as variables."""
        compiled = _compiled_or_refuse(expression, "eval")
        data = {key: value for key, value in context.items() if not _is_hidden(key)}
        if compiled.may_mutate:  # a method call could change task data in place
            data = copy.deepcopy(data)
        run = _Run(self.limits)
        namespace = run.namespace(self.globals, external_context or {}, data)
        value = run.run(compiled.code, namespace, "eval")
        run.check_expanded(value, "expression result")
        return value

    def execute(
        self, script: str, context: dict[str, Any], external_context: Mapping[str, Any] | None = None
    ) -> bool:
        """Run ``script``; on success its variables replace the task data in ``context`` (in place)."""
        external = dict(external_context or {})
        self._refuse_shadowed_functions(context, external)
        compiled = _compiled_or_refuse(script, "exec")
        data = copy.deepcopy({key: value for key, value in context.items() if not _is_hidden(key)})
        run = _Run(self.limits)
        namespace = run.namespace(self.globals, external, data)
        run.run(compiled.code, namespace, "exec")
        result = {key: value for key, value in namespace.items() if self._is_task_data(key, value, external)}
        run.check_expanded(result, "task data left by the script")
        self._write_back(context, result)
        return True

    def _is_task_data(self, key: Any, value: Any, external: Mapping[str, Any]) -> bool:
        # Iterators (generators, map objects...) are not data either and would break the next deepcopy.
        return not (
            _is_hidden(key)
            or callable(value)
            or isinstance(value, ModuleType | Iterator)
            or key in self.globals
            or key in external
        )

    @staticmethod
    def _write_back(context: dict[str, Any], result: dict[str, Any]) -> None:
        merged = {key: context[key] for key in context if _is_hidden(key)}
        merged.update(result)
        context.clear()
        context.update(merged)

    def _refuse_shadowed_functions(self, context: Mapping[str, Any], external: Mapping[str, Any]) -> None:
        """Task data named like a provided function would make it uncallable: fail early and clearly."""
        clashes = sorted((set(self.globals) | set(external)) & set(context))
        if clashes:
            raise ValueError(
                f"task data overwrites predefined function(s) {clashes}; rename these variables or fields"
            )


def find_script_refusal(exc: BaseException | None) -> ScriptRefused | None:
    """Walk an exception chain (``.exception``, ``__cause__``, ``__context__``) to a sandbox refusal.

    Lets the engine tell "the sandbox stopped this script" (incident) from an ordinary script bug.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ScriptRefused):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "exception", None) or exc.__cause__ or exc.__context__
    return None


def _keep_cause(wte: WorkflowTaskException, cause: BaseException | None) -> None:
    """WorkflowTaskException only stores the cause's class name; keep the exception itself too."""
    if cause is not None and cause is not wte and getattr(wte, "exception", None) is None:
        wte.exception = cause
        wte.__cause__ = cause


class SandboxScriptEngine(PythonScriptEngine):
    """PythonScriptEngine whose task errors keep the original exception as ``.exception``/``__cause__``."""

    def evaluate(self, task: Any, expression: str, external_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().evaluate(task, expression, external_context)
        except WorkflowTaskException as wte:
            _keep_cause(wte, wte.__cause__ or wte.__context__)
            raise

    def create_task_exec_exception(self, task: Any, script: str, err: Exception) -> Exception:
        wte = super().create_task_exec_exception(task, script, err)
        if isinstance(wte, WorkflowTaskException):
            _keep_cause(wte, err)
        return wte


def make_script_engine(time_budget: float = 2.0, limits: Limits | None = None) -> PythonScriptEngine:
    """The script engine every workflow in Qizhi must use instead of SpiffWorkflow's default."""
    return SandboxScriptEngine(environment=SandboxEnvironment(time_budget=time_budget, limits=limits))
