"""Serialized runtime state of a workflow, without its spec.

SpiffWorkflow's serializer writes the whole process spec into every instance's state. The spec
belongs to the deployed definition (compiled once per content hash, see engine.bundle), so this
serializer leaves it out on save and hands the cached spec objects back on load. That keeps each
instance row small and makes loading cost proportional to the runtime state only.
"""

from __future__ import annotations

import json
import zlib
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from SpiffWorkflow.spiff.serializer import DEFAULT_CONFIG

# Level 1 zlib: state of a real lifecycle instance shrinks ~8x for well under a millisecond.
COMPRESSION_LEVEL = 1


class SpeclessWorkflowConverter(BpmnWorkflowConverter):
    """Writes runtime state only; restores it against spec objects supplied by the caller."""

    def to_dict(self, workflow: BpmnWorkflow) -> dict[str, Any]:
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(
        self,
        dct: dict[str, Any],
        spec: BpmnProcessSpec | None = None,
        subprocess_specs: dict[str, BpmnProcessSpec] | None = None,
    ) -> BpmnWorkflow:
        if spec is None:  # a full serialization, e.g. from SpiffWorkflow itself
            return super().from_dict(dct)
        dct.pop("spec", None)
        dct.pop("subprocess_specs", None)
        workflow = self.target_class(spec, subprocess_specs or {}, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def _config() -> dict[type, type]:
    config = dict(DEFAULT_CONFIG)
    config[BpmnWorkflow] = SpeclessWorkflowConverter
    return config


class StateSerializer:
    """Bytes in, workflow out, with the script engine attached (it is never serialized)."""

    def __init__(self) -> None:
        self._serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(_config()))

    def dumps(self, workflow: BpmnWorkflow) -> bytes:
        registry = self._serializer.registry
        registry._encoder_mode = True  # the library's own switch for JSON-ready output
        try:
            dct = registry.convert(workflow)
        finally:
            registry._encoder_mode = False
        dct[BpmnWorkflowSerializer.VERSION_KEY] = self._serializer.VERSION
        text = json.dumps(dct, cls=self._serializer._encoder_cls, separators=(",", ":"))
        return zlib.compress(text.encode("utf-8"), COMPRESSION_LEVEL)

    def loads(
        self,
        data: bytes,
        spec: BpmnProcessSpec,
        subprocess_specs: dict[str, BpmnProcessSpec],
        script_engine: PythonScriptEngine,
    ) -> BpmnWorkflow:
        dct = json.loads(zlib.decompress(data), cls=self._serializer.json_decoder_cls)
        self._serializer.migrate(dct)
        workflow = self._serializer.registry.restore(dct, spec=spec, subprocess_specs=subprocess_specs)
        workflow.script_engine = script_engine
        return workflow
