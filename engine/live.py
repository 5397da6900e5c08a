"""Workflows kept alive between commands, so a busy instance is not rebuilt from bytes every time.

An entry is keyed by instance id and the revision it was committed at. Taking one removes it, so
a command that fails half-way (and rolls back) can never leave a mutated object behind; a
revision written by another process simply misses and the state is deserialized as usual.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from SpiffWorkflow.bpmn import BpmnWorkflow

SIZE = 512


class LiveWorkflows:
    def __init__(self, size: int = SIZE) -> None:
        self._size = size
        self._items: OrderedDict[int, tuple[int, BpmnWorkflow]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, instance_id: int, revision: int) -> BpmnWorkflow | None:
        with self._lock:
            entry = self._items.pop(instance_id, None)
        if entry is None or entry[0] != revision:
            return None
        return entry[1]

    def put(self, instance_id: int, revision: int, workflow: BpmnWorkflow) -> None:
        with self._lock:
            self._items[instance_id] = (revision, workflow)
            self._items.move_to_end(instance_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
