"""Deployable bundles: BPMN, DMN and JSON-Schema forms, checked as a whole before anything is stored.

A bundle is compiled into SpiffWorkflow specs once per content hash and cached; instances only
store their runtime state, never the spec.
"""

from __future__ import annotations

import ast
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from lxml import etree
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.subworkflow_task import SubWorkflowTask as SubWorkflowTaskMixin
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser

from engine.errors import BundleInvalid, Problem
from engine.safexml import UnsafeXML, parse_xml
from engine.sandbox import check_source

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
FORM_PROPERTY = "formJsonSchemaFilename"
# Spiff extension properties whose values are sandboxed expressions evaluated against task data.
EXPRESSION_PROPERTIES = ("owner", "dueDate", "priority", "reminderBefore")


@dataclass(frozen=True)
class Bundle:
    """The files of one deployment, by base name. Content decides identity, not file order."""

    files: Mapping[str, str]

    @classmethod
    def from_files(cls, files: Mapping[str, bytes | str] | Iterable[str | Path]) -> Bundle:
        if not isinstance(files, Mapping):
            files = {Path(p).name: Path(p).read_bytes() for p in files}
        out: dict[str, str] = {}
        for name, data in files.items():
            base = PurePath(name).name
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            out[base] = text.lstrip("\ufeff")
        return cls(dict(sorted(out.items())))

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for name, text in self.files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
        return digest.hexdigest()

    def named(self, suffix: str) -> dict[str, str]:
        return {n: t for n, t in self.files.items() if n.lower().endswith(suffix)}


@dataclass
class Compiled:
    """Specs for every process of a bundle, and its forms, ready to instantiate."""

    process_key: str
    name: str
    specs: dict[str, BpmnProcessSpec]
    forms: dict[str, dict[str, Any]]
    waits_for_events: bool = True  # any timer or message event: False lets a command skip those tables

    def subprocess_specs(self) -> dict[str, BpmnProcessSpec]:
        return {k: v for k, v in self.specs.items() if k != self.process_key}


def compile_bundle(bundle: Bundle, process_key: str | None = None) -> Compiled:
    """Parse and check a bundle; raise BundleInvalid listing every problem found."""
    problems: list[Problem] = []
    parser = SpiffBpmnParser(validator=VALIDATOR)
    forms = _load_forms(bundle, problems)
    trees = _parse_documents(bundle, problems)
    for name, tree in trees.items():
        _add_document(parser, name, tree, problems)
    _check_documents(trees, forms, problems)
    seen = {p.element for p in problems if p.element}
    parse_problems: list[Problem] = []
    specs = _build_specs(parser, parse_problems)
    problems.extend(p for p in parse_problems if p.element not in seen)  # said once, with its file
    key = _choose_process(parser, trees, process_key, problems) if specs else None
    if key and key not in specs:
        problems.append(Problem("", key, f"process '{key}' is not in the bundle"))
    if problems:
        raise BundleInvalid(list(dict.fromkeys(problems)))
    assert key is not None
    main = specs[key]
    used = {key, *_called(specs, key)}
    used_specs = {k: v for k, v in specs.items() if k in used}
    return Compiled(
        process_key=key,
        name=main.description or key,
        specs=used_specs,
        forms=forms,
        waits_for_events=any(_waits(ts) for spec in used_specs.values() for ts in spec.task_specs.values()),
    )


def _waits(task_spec: Any) -> bool:
    event = getattr(task_spec, "event_definition", None)
    inner = getattr(event, "event_definitions", None) or [event]
    return any(isinstance(e, (TimerEventDefinition, MessageEventDefinition)) for e in inner)


def _load_forms(bundle: Bundle, problems: list[Problem]) -> dict[str, dict[str, Any]]:
    forms: dict[str, dict[str, Any]] = {}
    for name, text in bundle.named(".json").items():
        try:
            schema = json.loads(text)
            Draft202012Validator.check_schema(schema)
        except json.JSONDecodeError as err:
            problems.append(Problem(name, None, f"not valid JSON: {err.msg} (line {err.lineno})"))
            continue
        except SchemaError as err:
            problems.append(Problem(name, None, f"not a valid JSON Schema: {err.message}"))
            continue
        forms[name] = schema
    return forms


def _parse_documents(bundle: Bundle, problems: list[Problem]) -> dict[str, etree._Element]:
    trees: dict[str, etree._Element] = {}
    xml_files = {**bundle.named(".bpmn"), **bundle.named(".dmn"), **bundle.named(".bpmn20.xml")}
    if not bundle.named(".bpmn") and not bundle.named(".bpmn20.xml"):
        problems.append(Problem("", None, "the bundle has no BPMN file"))
    for name, text in xml_files.items():
        try:
            trees[name] = parse_xml(text.encode("utf-8"), name)
        except UnsafeXML as err:
            problems.append(Problem(name, None, str(err).removeprefix(f"{name}, ").removeprefix(f"{name}: ")))
    return trees


def _add_document(parser: SpiffBpmnParser, name: str, tree: etree._Element, problems: list[Problem]) -> None:
    if name.lower().endswith(".dmn"):
        try:
            parser.add_dmn_xml(tree, filename=name)
        except Exception as err:  # SpiffWorkflow raises several kinds here
            problems.append(Problem(name, _element_of(err), _message_of(err)))
        return
    schema_errors = _schema_errors(tree)
    if schema_errors:
        problems.extend(Problem(name, None, msg) for msg in schema_errors)
        return
    try:
        parser.add_bpmn_xml(tree, filename=name)
    except Exception as err:
        problems.append(Problem(name, _element_of(err), _message_of(err)))


def _schema_errors(tree: etree._Element) -> list[str]:
    """Every XSD error at once: SpiffWorkflow's validator stops at the last one."""
    VALIDATOR.preprocess(tree)
    if VALIDATOR.validator.validate(tree):
        return []
    return [f"line {e.line}: {e.message}" for e in VALIDATOR.validator.error_log]


def _choose_process(
    parser: SpiffBpmnParser, trees: Mapping[str, etree._Element], wanted: str | None, problems: list[Problem]
) -> str | None:
    if wanted:
        return wanted
    called = set()
    top_level = []  # <process> elements of a definitions document; embedded sub-processes are not roots
    for tree in trees.values():
        called.update(node.get("calledElement") for node in tree.iter(f"{{{BPMN_NS}}}callActivity"))
        top_level += [p.get("id") for p in tree.findall(f"{{{BPMN_NS}}}process")]
    roots = [
        pid
        for pid in top_level
        if pid not in called
        and parser.get_process_parser(pid)
        and parser.get_process_parser(pid).process_executable
    ]
    if len(roots) == 1:
        return roots[0]
    problems.append(Problem("", None, f"cannot tell which process to deploy among {sorted(roots)}: name one"))
    return None


def _build_specs(parser: SpiffBpmnParser, problems: list[Problem]) -> dict[str, BpmnProcessSpec]:
    """Every process's spec. Parsing a process registers its expanded sub-processes, so go on
    until no new process ids appear."""
    specs: dict[str, BpmnProcessSpec] = {}
    tried: set[str] = set()
    while todo := [pid for pid in parser.get_process_ids() if pid not in tried]:
        for pid in todo:
            tried.add(pid)
            try:
                specs[pid] = parser.get_spec(pid)
            except Exception as err:
                problems.append(
                    Problem(getattr(err, "file_name", "") or "", _element_of(err), _message_of(err))
                )
    for spec in specs.values():
        for ts in spec.task_specs.values():
            if isinstance(ts, SubWorkflowTaskMixin) and ts.spec not in specs:
                problems.append(Problem(spec.file or "", ts.bpmn_id, f"calls unknown process '{ts.spec}'"))
    return specs


def _called(specs: Mapping[str, BpmnProcessSpec], key: str, seen: set[str] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    for ts in specs[key].task_specs.values():
        if isinstance(ts, SubWorkflowTaskMixin) and ts.spec not in seen:
            seen.add(ts.spec)
            _called(specs, ts.spec, seen)
    return seen


DMN_NAMESPACES = (
    "https://www.omg.org/spec/DMN/20191111/MODEL/",
    "http://www.omg.org/spec/DMN/20180521/MODEL/",
    "http://www.omg.org/spec/DMN/20151101/dmn.xsd",
)
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}
# (xpath to code, mode, what it is): code that the sandbox must accept before anything is deployed
CODE_PATHS = (
    ("bpmn:script", "exec", "script"),
    ("spiffworkflow:preScript", "exec", "pre-script"),
    ("spiffworkflow:postScript", "exec", "post-script"),
    ("bpmn:conditionExpression", "eval", "condition"),
    ("bpmn:timerEventDefinition/*", "eval", "timer expression"),
    ("bpmn:multiInstanceLoopCharacteristics/bpmn:loopCardinality", "eval", "cardinality"),
    ("bpmn:multiInstanceLoopCharacteristics/bpmn:completionCondition", "eval", "completion condition"),
)


def _check_documents(
    trees: Mapping[str, etree._Element], forms: Mapping[str, Any], problems: list[Problem]
) -> None:
    """What SpiffWorkflow leaves to run time, checked on the XML so one bad element hides no other."""
    decisions = {
        node.get("id")
        for tree in trees.values()
        for ns in DMN_NAMESPACES
        for node in tree.iter(f"{{{ns}}}decision")
    }
    for name, tree in trees.items():
        if tree.tag != f"{{{BPMN_NS}}}definitions":
            continue
        for element in tree.iter(etree.Element):
            _check_element(name, element, forms, decisions, problems)


def _check_element(
    file: str,
    node: etree._Element,
    forms: Mapping[str, Any],
    decisions: set[str | None],
    problems: list[Problem],
) -> None:
    tag = etree.QName(node).localname
    element = node.get("id") or tag
    for prop in node.xpath(
        "./bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property", namespaces=NS
    ):
        key, value = prop.get("name"), prop.get("value") or ""
        if key == FORM_PROPERTY and value not in forms:
            problems.append(Problem(file, element, f"form '{value}' is not in the bundle"))
        elif key in EXPRESSION_PROPERTIES:
            _check_code(value, "eval", file, element, problems, f"property '{key}'")
    for path, mode, what in CODE_PATHS:
        for code in node.xpath(f"./{path}", namespaces=NS):
            if code.text and code.text.strip():
                _check_code(code.text, mode, file, element, problems, what)
    if tag in ("userTask", "manualTask", "task"):
        _check_output_item(file, node, forms, problems)
    if tag == "businessRuleTask":
        for ref in node.xpath("./bpmn:extensionElements/spiffworkflow:calledDecisionId", namespaces=NS):
            if ref.text not in decisions:
                problems.append(
                    Problem(file, element, f"decision '{ref.text}' is not in the bundle's DMN files")
                )
    if tag == "exclusiveGateway" and not node.get("default"):
        _check_exclusive_gateway(file, node, problems)


def _check_output_item(
    file: str, node: etree._Element, forms: Mapping[str, Any], problems: list[Problem]
) -> None:
    """A person's multi-instance task must be able to produce its output item, or it can never finish."""
    item = node.xpath("./bpmn:multiInstanceLoopCharacteristics/bpmn:outputDataItem", namespaces=NS)
    if not item or node.xpath("./bpmn:extensionElements/spiffworkflow:postScript", namespaces=NS):
        return
    name = item[0].get("name") or item[0].get("id")
    form_name = node.xpath(
        f"string(./bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property"
        f"[@name='{FORM_PROPERTY}']/@value)",
        namespaces=NS,
    )
    fields = (forms.get(form_name) or {}).get("properties", {})
    if name not in fields:
        problems.append(
            Problem(
                file, node.get("id"), f"multi-instance output item '{name}' is not a field of the task's form"
            )
        )


def _check_code(source: str, mode: str, file: str, element: str, problems: list[Problem], what: str) -> None:
    for message in check_source(source, mode):
        problems.append(Problem(file, element, f"{what}: {message}"))


def _check_exclusive_gateway(file: str, gateway: etree._Element, problems: list[Problem]) -> None:
    """A gateway without a default flow must not be able to find every condition false.

    Only what can be seen without data is reported: conditions that are all constants, all false.
    (A flow with no condition at all SpiffWorkflow's parser reports itself.)
    """
    gid = gateway.get("id")
    flows = gateway.getparent().xpath(f"./bpmn:sequenceFlow[@sourceRef='{gid}']", namespaces=NS)
    conditions = [f.xpath("string(./bpmn:conditionExpression)", namespaces=NS).strip() for f in flows]
    if len(conditions) < 2 or not all(conditions):
        return
    constants = [_constant(c) for c in conditions]
    if all(value is not _UNKNOWN for value in constants) and not any(constants):
        problems.append(Problem(file, gid, "every condition of this gateway is false and it has no default"))


_UNKNOWN = object()


def _constant(expression: str) -> object:
    try:
        return ast.literal_eval(expression.strip())
    except (ValueError, SyntaxError):
        return _UNKNOWN


def _element_of(err: Exception) -> str | None:
    for attr in ("id", "element_id", "node_id"):
        value = getattr(err, attr, None)
        if value:
            return str(value)
    return None


def _message_of(err: Exception) -> str:
    if isinstance(err, ValidationException):
        line = getattr(err, "line_number", None)
        base = str(err.args[0]) if err.args else str(err)
        return f"{base} (line {line})" if line else base
    return f"{type(err).__name__}: {err}"


class SpecCache:
    """Compiled bundles by content hash: a definition is parsed once per process, not per load."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._items: OrderedDict[str, Compiled] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, content_hash: str, sources: Callable[[], Mapping[str, str]], process_key: str) -> Compiled:
        """The compiled bundle; ``sources`` is only called on a miss (it may be a database read)."""
        key = f"{content_hash}:{process_key}"
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        compiled = compile_bundle(Bundle.from_files(sources()), process_key)
        with self._lock:
            self._items[key] = compiled
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return compiled

    def put(self, content_hash: str, process_key: str, compiled: Compiled) -> None:
        with self._lock:
            self._items[f"{content_hash}:{process_key}"] = compiled
