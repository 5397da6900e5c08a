"""The script sandbox: what designers' code may do, what it may not, and that budgets really stop it."""

from __future__ import annotations

import copy
import os
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import pytest
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

from engine.safexml import parse_xml
from engine.sandbox import (
    Limits,
    SandboxEnvironment,
    ScriptRefused,
    ScriptTimeout,
    check_source,
    find_script_refusal,
    make_script_engine,
)

BUDGET = 0.5


def task_data() -> dict[str, Any]:
    return {"n": 1, "items": [1, 2], "info": {"a": 1, "tags": ["x"]}, "name": "张三"}


@pytest.fixture
def env() -> SandboxEnvironment:
    return SandboxEnvironment(time_budget=BUDGET)


def run(env: SandboxEnvironment, script: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    context = task_data() if data is None else data
    env.execute(script, context)
    return context


# Every refused script first mutates the task data, so the tests also show nothing is written back.
MUTATE_FIRST = "items.append(99)\ninfo['a'] = 2\ninfo['tags'].append('y')\nn = 5\nfresh = 1\n"

REFUSED = [
    ("__import__('os')", '"__import__"'),
    ("import os", "import is not allowed"),
    ("from os import path", "import is not allowed"),
    ("open('/etc/passwd')", "calling 'open' is not allowed"),
    ("x = ().__class__.__base__.__subclasses__()", "access to '__subclasses__' is not allowed"),
    ("x = (lambda: 0).__globals__", "access to '__globals__' is not allowed"),
    ("def f():\n    return 1\nx = f.__globals__['__builtins__']", "access to '__globals__' is not allowed"),
    ("x = __builtins__", '"__builtins__"'),
    ("x = items.__class__.__mro__", "access to '__"),
    ("x = getattr(items, '__class__')", "calling 'getattr' is not allowed"),
    ("x = type(items).__subclasses__()", "access to '__subclasses__' is not allowed"),
    ("x = type(items)", "calling 'type' is not allowed"),
    ("x = eval('1 + 1')", "calling 'eval' is not allowed"),
    ("exec('x = 1')", "calling 'exec' is not allowed"),
    ("x = compile('1', 'f', 'eval')", "calling 'compile' is not allowed"),
    ("x = globals()", "calling 'globals' is not allowed"),
    ("x = locals()", "calling 'locals' is not allowed"),
    ("x = vars()", "calling 'vars' is not allowed"),
    ("x = dir()", "calling 'dir' is not allowed"),
    ("f = eval", "'eval' is not allowed"),
    ("x = '{0.__class__}'.format(1)", "access to 'format' is not allowed"),
    ("x = '{0.__class__}'.format_map({})", "access to 'format_map' is not allowed"),
    ("x = str.format('{0.__class__}', 1)", "access to 'format' is not allowed"),
    ("x = str.mro()", "access to 'mro' is not allowed"),
    ("def g():\n    yield 1\nx = g().gi_frame", "gi_frame"),
    ("class A:\n    pass", "class definitions are not allowed"),
    ("x = [0] * 10**9", "the limit is"),
    ("x = 'x' * 10**10", "the limit is"),
    ("x = 2 ** 10**9", "bits"),
    ("x = 1 << 10**9", "bits"),
    ("s = 'a' * 1000\nfor i in range(20):\n    s = s + s", "the limit is"),
    ("x = 'a'.ljust(10**9)", "the limit is"),
    ("parts = []\nfor i in range(20):\n    parts.append('a' * 100000)\nx = ''.join(parts)", "the limit is"),
    ("x = ('a' * 1000).replace('a', 'b' * 10000)", "the limit is"),
    ("x = '%1000000000d' % 1", "the limit is"),
    ("x = '%*d' % (10**9, 1)", "'*' widths"),
    ("w = 10**9\nx = f'{1:>{w}}'", "too large"),
    ("x = (1).to_bytes(10**9, 'big')", "the limit is"),
    ("x = sum([[1]] * 10, [])", "sum() only adds numbers"),
    ("x = [[0] * 1000000] * 1000000", "the limit is"),
    ("x = int(Decimal('1e999999'))", "Decimal exponent out of range"),
    ("x = str.join('', ['a'])", "not on the type 'str'"),
    ("x = round(5, -10**9)", "round() ndigits"),
    ("x = pow(3, 2**20000, 2**20000 + 1)", "would take too long"),
    ("x = int.from_bytes(b'\\xff' * 10**6, 'big')", "bits"),
    ("x = 'abc'\nx[0] = 'q'", "cannot modify a value of type 'str'"),
    ("try:\n    x = [0] * 10**9\nexcept Exception:\n    x = 1", "the limit is"),
]


@pytest.mark.parametrize(("script", "message"), REFUSED, ids=[s for s, _ in REFUSED])
def test_forbidden_scripts_are_refused_and_change_nothing(env: SandboxEnvironment, script: str,
                                                          message: str) -> None:
    context = task_data()
    with pytest.raises(ScriptRefused) as info:
        env.execute(MUTATE_FIRST + script, context)
    assert message in str(info.value)
    assert context == task_data()


@pytest.mark.parametrize(
    "script",
    [
        "while True:\n    pass",
        "for i in range(10**12):\n    pass",
        "x = sum(range(10**12))",
        "x = [i for i in range(10**12)]",
        "x = list(range(10**12))",
        "def f():\n    while True:\n        pass\nf()",
        "try:\n    while True:\n        pass\nexcept Exception:\n    caught = True",
        "f = lambda n: f(n - 1) + f(n - 1) if n else 1\nx = f(64)",
    ],
)
def test_runaway_scripts_time_out_within_the_budget(env: SandboxEnvironment, script: str) -> None:
    context = task_data()
    started = time.monotonic()
    with pytest.raises(ScriptTimeout) as info:
        env.execute(MUTATE_FIRST + script, context)
    assert time.monotonic() - started < 5
    assert "budget" in str(info.value)
    assert context == task_data()


def test_deep_recursion_is_a_timeout(env: SandboxEnvironment) -> None:
    context = task_data()
    with pytest.raises(ScriptTimeout, match="recursion"):
        env.execute("def down(k):\n    return down(k + 1)\ndown(0)", context)
    assert context == task_data()


def test_step_budget_is_deterministic() -> None:
    env = SandboxEnvironment(limits=Limits(time_budget=30, max_steps=1000))
    env.execute("for i in range(999):\n    pass", {})
    with pytest.raises(ScriptTimeout, match="step budget of 1000"):
        env.execute("for i in range(1001):\n    pass", {})


def test_timeout_on_a_worker_thread(env: SandboxEnvironment) -> None:
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            env.execute("while True:\n    pass", {})
        except BaseException as err:  # handed to the main thread
            outcome.append(err)

    worker = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], ScriptTimeout)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="memory budget needs /proc")
def test_memory_budget_stops_a_hoarding_loop() -> None:
    env = SandboxEnvironment(limits=Limits(time_budget=10, max_memory_growth=64 * 1024 * 1024))
    with pytest.raises(ScriptTimeout, match="memory budget"):
        env.execute("chunks = []\nwhile True:\n    chunks.append('x' * 1000000)", {})


def test_normal_script(env: SandboxEnvironment) -> None:
    script = """
total = 0
for i in range(10):
    total += i
squares = [i * i for i in range(5) if i % 2 == 0]
index = {k: v for k, v in info.items() if k != "tags"}
unique = {x for x in [1, 1, 2]}
gen_sum = sum(x for x in items)
items.append(3)
items[0] = 10
info['a'] += 1
info['b'] = info.get('b', 0) + 5
info['tags'].extend(['y', 'z'])
del info['tags'][0]
count = 0
while count < 3:
    count = count + 1
first, *rest = [1, 2, 3]
a, (b, c) = 1, (2, 3)
"""
    context = run(env, script)
    assert context["total"] == 45
    assert context["squares"] == [0, 4, 16]
    assert context["index"] == {"a": 1}
    assert context["unique"] == {1, 2}
    assert context["gen_sum"] == 3
    assert context["items"] == [10, 2, 3]
    assert context["info"] == {"a": 2, "tags": ["y", "z"], "b": 5}
    assert context["count"] == 3
    unpacked = (context["first"], context["rest"], context["a"], context["b"], context["c"])
    assert unpacked == (1, [2, 3], 1, 2, 3)


def test_functions_strings_dates_and_numbers(env: SandboxEnvironment) -> None:
    script = """
def fact(k):
    return 1 if k <= 1 else k * fact(k - 1)

def label(person, score):
    \"\"\"helpers defined in the script can call each other\"\"\"
    return f"{person.strip()}: {grade(score)}"

grade = lambda s: "优秀" if s >= 90 else "合格"
f10 = fact(10)
text = label("  " + name + " ", 95)
upper = "abc".upper()
ok = text.startswith("张") and "优" in text
words = "a,b,,c".split(",")
joined = "-".join(w for w in words if w)
swapped = "x-y".replace("-", "+")
due = date(2024, 1, 31) + timedelta(days=1)
parsed = datetime.strptime("2024-05-01 08:30", "%Y-%m-%d %H:%M")
shown = parsed.strftime("%Y年%m月%d日")
gap = (datetime(2024, 3, 1) - datetime(2024, 2, 1)).days
stamp = now()
day = today()
money = Decimal("0.10") + Decimal("0.20")
is_money = isinstance(money, Decimal) and isinstance(f10, int)
rounded = round(2.675, 1)
lo = floor(2.5)
hi = ceil(2.5)
ordered = sorted(["b", "c", "a"], key=lambda s: s, reverse=True)
pairs = list(zip([1, 2], ["a", "b"]))
numbered = [(i, w) for i, w in enumerate(["x", "y"])]
big = max(abs(-3), min(7, 9), len(items))
try:
    broken = {}["missing"]
except KeyError:
    broken = None
print("debug", f10)
"""
    context = run(env, script)
    assert context["f10"] == 3628800
    assert context["text"] == "张三: 优秀" and context["ok"] is True
    assert context["upper"] == "ABC"
    assert context["joined"] == "a-b-c" and context["swapped"] == "x+y"
    assert context["due"] == date(2024, 2, 1) and context["gap"] == 29
    assert context["parsed"] == datetime(2024, 5, 1, 8, 30) and context["shown"] == "2024年05月01日"
    assert context["stamp"].tzinfo is not None and context["stamp"].utcoffset() == timedelta(0)
    assert abs(context["stamp"] - datetime.now(UTC)) < timedelta(minutes=1)
    assert isinstance(context["day"], date)
    assert context["money"] == Decimal("0.30") and context["is_money"] is True
    assert (context["lo"], context["hi"]) == (2, 3)
    assert context["ordered"] == ["c", "b", "a"]
    assert context["pairs"] == [(1, "a"), (2, "b")]
    assert context["numbered"] == [(0, "x"), (1, "y")]
    assert context["big"] == 7
    assert context["broken"] is None
    # no helpers, modules, builtins or print plumbing left behind
    assert not any(callable(v) for v in context.values())
    assert "__builtins__" not in context and not any(k.startswith("_") for k in context)
    assert "fact" not in context and "grade" not in context


def test_deleted_variables_leave_the_task_data(env: SandboxEnvironment) -> None:
    context = run(env, "del n\ntemp = 1\ndel temp")
    assert "n" not in context and "temp" not in context and context["items"] == [1, 2]


def test_underscore_keys_are_kept_but_cannot_shadow_guards(env: SandboxEnvironment) -> None:
    context = {"_getattr_": "not a function", "_internal": {"x": 1}, "s": " a "}
    env.execute("t = s.strip()", context)
    assert context == {"_getattr_": "not a function", "_internal": {"x": 1}, "s": " a ", "t": "a"}


def test_external_context_is_usable_but_not_stored(env: SandboxEnvironment) -> None:
    context = {"x": 2}
    env.execute("y = double(x)", context, {"double": lambda v: v * 2})
    assert context == {"x": 2, "y": 4}
    with pytest.raises(ValueError, match="overwrites predefined"):
        env.execute("y = 1", {"double": 1}, {"double": lambda v: v * 2})


def test_modules_cannot_be_exposed() -> None:
    with pytest.raises(ValueError, match="modules cannot be exposed"):
        SandboxEnvironment({"os": os})


DMN_STYLE = [
    ("score >= 90", {"score": 95}, None, True),
    ("(score) == (90)", {"score": 95}, None, False),
    ('(stage) == ("立项")', {"stage": "立项"}, None, True),
    ('"立项"', {}, None, "立项"),
    ('stage in ["立项", "结项"]', {"stage": "结项"}, None, True),
    ("60 <= dmninputexpr < 90", {}, {"dmninputexpr": 75}, True),
    ("amount * 1.1 > 100", {"amount": 100}, None, True),
    ("len(members) >= 3 and leader != ''", {"members": [1, 2, 3], "leader": "李"}, None, True),
    ("deadline < date(2025, 1, 1)", {"deadline": date(2024, 6, 1)}, None, True),
    ("timedelta(days=3)", {}, None, timedelta(days=3)),
    ("  score > 1  ", {"score": 2}, None, True),
    ("applicant.get('age', 0) >= 18", {"applicant": {"age": 30}}, None, True),
]


@pytest.mark.parametrize(("expression", "data", "external", "expected"), DMN_STYLE,
                         ids=[e for e, *_ in DMN_STYLE])
def test_expressions_evaluate(env: SandboxEnvironment, expression: str, data: dict[str, Any],
                              external: dict[str, Any] | None, expected: Any) -> None:
    before = copy.deepcopy(data)
    assert env.evaluate(expression, data, external) == expected
    assert data == before


def test_expressions_cannot_change_task_data(env: SandboxEnvironment) -> None:
    data = task_data()
    assert env.evaluate("items.append(3) or len(items)", data) == 3
    assert data == task_data()


def test_expressions_are_sandboxed_too(env: SandboxEnvironment) -> None:
    with pytest.raises(ScriptRefused, match="access to '__class__'"):
        env.evaluate("items.__class__", task_data())
    with pytest.raises(ScriptTimeout):
        env.evaluate("sum(range(10**12))", {})


def test_check_source() -> None:
    assert check_source("import os") == ["Line 1: import is not allowed"]
    errors = check_source("x = (")
    assert len(errors) == 1 and "SyntaxError" in errors[0]
    assert "SyntaxError" in check_source("return 1")[0]
    assert check_source("total = sum(x for x in range(3))\nlabel = f'{total}'") == []
    assert check_source("score >= 90", "eval") == []
    assert check_source("x = 1", "eval") != []
    assert check_source("().__class__", "eval") == ["Line 1: access to '__class__' is not allowed"]
    with pytest.raises(ValueError, match="mode"):
        check_source("1", "single")


def test_compile_errors_raise_script_refused(env: SandboxEnvironment) -> None:
    with pytest.raises(ScriptRefused, match="SyntaxError"):
        env.execute("x = (", {})


def test_ordinary_script_errors_stay_ordinary(env: SandboxEnvironment) -> None:
    context = task_data()
    with pytest.raises(ZeroDivisionError):
        env.execute(MUTATE_FIRST + "x = 1 / 0", context)
    assert context == task_data()
    with pytest.raises(NameError):
        env.evaluate("undefined_name", {})


def test_make_script_engine() -> None:
    engine = make_script_engine(1.5)
    assert isinstance(engine, PythonScriptEngine)
    assert isinstance(engine.environment, SandboxEnvironment)
    assert engine.environment.limits.time_budget == 1.5


# ---------------------------------------------------------------------------------------------------
# Through SpiffWorkflow
# ---------------------------------------------------------------------------------------------------

NS = 'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" ' \
     'xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"'

SCRIPT_BPMN = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions {NS} id="defs" targetNamespace="http://example.com/qizhi">
  <bpmn:process id="sandboxed" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="compute" name="Compute">
      <bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:script>{{script}}</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:endEvent id="end"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="compute"/>
    <bpmn:sequenceFlow id="f2" sourceRef="compute" targetRef="end"/>
  </bpmn:process>
</bpmn:definitions>"""

RULE_BPMN = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions {NS} id="defs" targetNamespace="http://example.com/qizhi">
  <bpmn:process id="graded" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:businessRuleTask id="rule" name="Grade">
      <bpmn:extensionElements>
        <spiffworkflow:calledDecisionId>grade</spiffworkflow:calledDecisionId>
      </bpmn:extensionElements>
      <bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
    </bpmn:businessRuleTask>
    <bpmn:endEvent id="end"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="rule"/>
    <bpmn:sequenceFlow id="f2" sourceRef="rule" targetRef="end"/>
  </bpmn:process>
</bpmn:definitions>"""

GRADE_DMN = """<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="dmn" name="grades"
             namespace="http://example.com/qizhi">
  <decision id="grade" name="Grade">
    <decisionTable id="table" hitPolicy="UNIQUE">
      <input id="i1" label="Score">
        <inputExpression id="e1" typeRef="integer"><text>score</text></inputExpression>
      </input>
      <input id="i2" label="Stage">
        <inputExpression id="e2" typeRef="string"><text>stage</text></inputExpression>
      </input>
      <output id="o1" name="grade" typeRef="string"/>
      <rule id="r1">
        <inputEntry id="r1a"><text>&gt;= 90</text></inputEntry>
        <inputEntry id="r1b"><text>"立项"</text></inputEntry>
        <outputEntry id="r1c"><text>"优秀"</text></outputEntry>
      </rule>
      <rule id="r2">
        <inputEntry id="r2a"><text>60 &lt;= ? &lt; 90</text></inputEntry>
        <inputEntry id="r2b"><text>? in ["立项", "结项"]</text></inputEntry>
        <outputEntry id="r2c"><text>"合格"</text></outputEntry>
      </rule>
      <rule id="r3">
        <inputEntry id="r3a"><text></text></inputEntry>
        <inputEntry id="r3b"><text></text></inputEntry>
        <outputEntry id="r3c"><text>"待定"</text></outputEntry>
      </rule>
    </decisionTable>
  </decision>
</definitions>"""


def script_workflow(script: str, budget: float = BUDGET) -> BpmnWorkflow:
    parser = SpiffBpmnParser()
    xml = SCRIPT_BPMN.format(script=escape(script))
    parser.add_bpmn_xml(parse_xml(xml.encode("utf-8"), "sandbox_script.bpmn"), "sandbox_script.bpmn")
    return BpmnWorkflow(parser.get_spec("sandboxed"), script_engine=make_script_engine(budget))


def test_script_task_runs_in_the_sandbox() -> None:
    workflow = script_workflow("total = sum([1, 2, 3])\nlabel = f'共{total}人'\ndef helper():\n    return 1")
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert workflow.data == {"total": 6, "label": "共6人"}


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        ("import os", ScriptRefused),
        ("x = ().__class__.__base__.__subclasses__()", ScriptRefused),
        ("x = [0] * 10**9", ScriptRefused),
        ("while True:\n    pass", ScriptTimeout),
    ],
)
def test_forbidden_script_task_raises_workflow_task_exception(script: str, kind: type[ScriptRefused]) -> None:
    workflow = script_workflow(script, budget=0.3)
    with pytest.raises(WorkflowTaskException) as info:
        workflow.do_engine_steps()
    assert isinstance(info.value.__cause__, kind)
    assert isinstance(info.value.exception, kind)
    assert isinstance(find_script_refusal(info.value), kind)
    assert kind.__name__ in str(info.value)
    assert not workflow.is_completed()


def test_ordinary_script_task_error_is_not_a_refusal() -> None:
    workflow = script_workflow("y = undefined_name")
    with pytest.raises(WorkflowTaskException) as info:
        workflow.do_engine_steps()
    assert isinstance(info.value.__cause__, NameError)
    assert find_script_refusal(info.value) is None


@pytest.mark.parametrize(
    ("data", "grade"),
    [({"score": 95, "stage": "立项"}, "优秀"), ({"score": 70, "stage": "结项"}, "合格"),
     ({"score": 10, "stage": "其他"}, "待定")],
)
def test_dmn_decision_through_the_sandbox(data: dict[str, Any], grade: str) -> None:
    parser = SpiffBpmnParser()
    parser.add_dmn_xml(parse_xml(GRADE_DMN, "grade.dmn"), "grade.dmn")
    parser.add_bpmn_xml(parse_xml(RULE_BPMN, "graded.bpmn"), "graded.bpmn")
    workflow = BpmnWorkflow(parser.get_spec("graded"), script_engine=make_script_engine(BUDGET))
    for task in workflow.get_tasks():
        task.data.update(data)
    workflow.do_engine_steps()
    assert workflow.is_completed()
    assert workflow.data["grade"] == grade
