/* The process designer (web/templates/designer/edit.html): bpmn-js Modeler, a small side panel for
 * Qizhi's extension properties, server-side validation with problems marked on the diagram, deploy.
 *
 * No properties-panel package (it needs a bundler): our extensions are spiffworkflow:properties /
 * spiffworkflow:property elements, which bpmn-js keeps as generic moddle elements ("any" type) since
 * no descriptor is registered for that namespace -- so every other Spiff extension (scripts, decision
 * ids) round-trips untouched. The panel edits those generic elements and tells bpmn-js through
 * modeling.updateProperties, so the change is part of the command stack (undo works).
 */
(function () {
  "use strict";

  var SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core";
  var FORM = "formJsonSchemaFilename";
  var root = document.getElementById("qz-designer");
  if (!root) { return; }

  var text = JSON.parse(root.dataset.text || "{}");
  var forms = JSON.parse(root.dataset.forms || "[]");
  var roles = JSON.parse(root.dataset.roles || "{}");
  var decisions = JSON.parse(root.dataset.decisions || "[]");
  var labels = JSON.parse(root.dataset.labels || "{}");
  var state = { key: root.dataset.key || "", version: root.dataset.version ? Number(root.dataset.version) : null };
  var statusEl = root.querySelector(".qz-status");
  var results = root.querySelector(".qz-results");
  var panel = root.querySelector(".qz-panel-body");
  var marked = [];

  function say(message) { statusEl.textContent = message; }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  if (typeof window.BpmnJS !== "function") { say(text.loadFailed); return; }
  // bpmn-js asks its translate service for every palette, context pad and popup label (English keys);
  // ours answers from the table the page carries (web/designer_text.py, in the UI locale).
  function translate(template, replacements) {
    var values = replacements || {};
    return (labels[template] || template).replace(/{([^}]+)}/g, function (whole, key) {
      return values[key] !== undefined ? values[key] : whole;
    });
  }
  var modeler = new window.BpmnJS({
    container: root.querySelector(".qz-canvas"),
    additionalModules: [{ translate: ["value", translate] }]
  });
  window.qzModeler = modeler; // for the browser test and the console
  var modeling = modeler.get("modeling");
  var moddle = modeler.get("moddle");
  var canvas = modeler.get("canvas");
  var registry = modeler.get("elementRegistry");

  fetch(root.dataset.xmlUrl, { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
    .then(function (xml) { return modeler.importXML(xml); })
    .then(function () { readable(); root.dataset.ready = "1"; })
    .catch(function (err) { say(text.loadFailed + ": " + err.message); root.dataset.ready = "error"; });

  // A wide process (the lifecycle's six stages) fitted whole is too small to edit: past a point,
  // show it at a working size from its start instead, and let the designer scroll.
  var MIN_FIT = 0.6, WORKING = 0.9;
  function readable() {
    var fitted = canvas.zoom("fit-viewport");
    if (fitted >= MIN_FIT) { return; }
    var inner = canvas.viewbox().inner;
    var box = canvas.getContainer().getBoundingClientRect();
    canvas.viewbox({ x: inner.x - 20, y: inner.y - 20, width: box.width / WORKING, height: box.height / WORKING });
  }

  // --- our extension properties on the business object -------------------------------------------

  function propertiesOf(bo) {
    var values = bo.extensionElements ? bo.extensionElements.get("values") : [];
    var props = values.filter(function (v) { return v.$type === "spiffworkflow:properties"; })[0];
    return props ? { props: props } : null;
  }

  function getProperty(bo, name) {
    var found = propertiesOf(bo);
    var items = found ? (found.props.$children || []) : [];
    var item = items.filter(function (p) { return p.name === name; })[0];
    return item ? (item.value || "") : "";
  }

  // A fresh extensionElements (and properties) object on every change, so that undo gets the old,
  // untouched objects back; the property elements that did not change are shared.
  function setProperty(element, name, value) {
    var bo = element.businessObject;
    var found = propertiesOf(bo);
    var before = found ? found.props.$children || [] : [];
    var prop = value === "" ? null : moddle.createAny("spiffworkflow:property", SPIFF_NS, { name: name, value: value });
    var kept = before.map(function (p) { return p.name === name ? prop : p; }).filter(Boolean);
    if (prop && kept.indexOf(prop) < 0) { kept.push(prop); }
    var ext = moddle.create("bpmn:ExtensionElements", { values: [] });
    ext.$parent = bo;
    var props = null;
    if (kept.length) {
      props = moddle.createAny("spiffworkflow:properties", SPIFF_NS, { $children: kept });
      props.$parent = ext;
      kept.forEach(function (p) { p.$parent = props; });
    }
    var values = (bo.extensionElements ? bo.extensionElements.get("values") : [])
      .map(function (v) { return found && v === found.props ? props : v; }).filter(Boolean);
    if (props && values.indexOf(props) < 0) { values.push(props); }
    ext.set("values", values);
    modeling.updateProperties(element, { extensionElements: ext.get("values").length ? ext : undefined });
  }

  // spiffworkflow:calledDecisionId is a direct child of extensionElements, its text the decision id.
  var DECISION = "spiffworkflow:calledDecisionId";

  function getDecision(bo) {
    var values = bo.extensionElements ? bo.extensionElements.get("values") : [];
    var node = values.filter(function (v) { return v.$type === DECISION; })[0];
    return node ? (node.$body || "").trim() : "";
  }

  function setDecision(element, value) {
    // A fresh extensionElements object, so undo gets the old one back untouched.
    var bo = element.businessObject;
    var kept = (bo.extensionElements ? bo.extensionElements.get("values") : [])
      .filter(function (v) { return v.$type !== DECISION; });
    var ext = moddle.create("bpmn:ExtensionElements", { values: kept.slice() });
    ext.$parent = bo;
    if (value) {
      var node = moddle.createAny(DECISION, SPIFF_NS, { $body: value });
      node.$parent = ext;
      ext.get("values").push(node);
    }
    modeling.updateProperties(element, { extensionElements: ext.get("values").length ? ext : undefined });
  }

  // --- the side panel ------------------------------------------------------------------------------

  function field(label, input) {
    return el("label", { "class": "qz-field" }, [el("span", {}, [label]), input]);
  }

  function textInput(element, name, placeholder) {
    var input = el("input", { type: "text", value: getProperty(element.businessObject, name), placeholder: placeholder || "" });
    input.addEventListener("change", function () { setProperty(element, name, input.value.trim()); });
    return input;
  }

  function select(options, current, onChange) {
    var node = el("select", {});
    options.forEach(function (o) {
      var option = el("option", { value: o[0] }, [o[1]]);
      if (o[0] === current) { option.selected = true; }
      node.appendChild(option);
    });
    node.addEventListener("change", function () { onChange(node.value); });
    return node;
  }

  function show(element) {
    panel.textContent = "";
    if (!element || element.type === "label") { panel.appendChild(el("p", {}, [text.selectHint])); return; }
    var bo = element.businessObject;
    panel.appendChild(el("p", { "class": "qz-element-id" }, [element.type.replace("bpmn:", "") + " · " + bo.id]));
    if (element.type === "bpmn:Lane") {
      var roleOptions = [["", text.none]].concat(Object.keys(roles).map(function (k) { return [k, roles[k] + " (" + k + ")"]; }));
      if (bo.name && !roles[bo.name]) { roleOptions.push([bo.name, bo.name]); }
      panel.appendChild(field(text.laneRole, select(roleOptions, bo.name || "", function (value) {
        modeling.updateProperties(element, { name: value || undefined });
      })));
      return;
    }
    var name = el("input", { type: "text", value: bo.name || "" });
    name.addEventListener("change", function () { modeling.updateLabel(element, name.value); });
    panel.appendChild(field(text.name, name));
    var isTask = /Task$/.test(element.type) || element.type === "bpmn:Task";
    var isPersonTask = element.type === "bpmn:UserTask" || element.type === "bpmn:ManualTask";
    if (isPersonTask) {
      var current = getProperty(bo, FORM);
      var formOptions = [["", text.none]].concat(forms.map(function (f) { return [f, f]; }));
      if (current && forms.indexOf(current) < 0) { formOptions.push([current, current]); }
      panel.appendChild(field(text.form, select(formOptions, current, function (value) { setProperty(element, FORM, value); })));
      panel.appendChild(field(text.dueDate, textInput(element, "dueDate", '"P7D"')));
      panel.appendChild(field(text.owner, textInput(element, "owner", '"username"')));
    }
    if (element.type === "bpmn:BusinessRuleTask") {
      var called = getDecision(bo);
      var decisionOptions = [["", text.none]].concat(decisions.map(function (d) { return [d, d]; }));
      if (called && decisions.indexOf(called) < 0) { decisionOptions.push([called, called]); }
      panel.appendChild(field(text.decision, select(decisionOptions, called, function (value) { setDecision(element, value); })));
    }
    if (isTask || element.type === "bpmn:SubProcess") {
      panel.appendChild(field(text.stage, textInput(element, "stage", "")));
    }
  }

  modeler.on("selection.changed", function (e) { show(e.newSelection[0]); });
  modeler.on("element.changed", function (e) {
    var selected = modeler.get("selection").get();
    if (selected.length === 1 && selected[0] === e.element && !panel.contains(document.activeElement)) { show(e.element); }
  });

  // --- lanes for steps inside a stage ------------------------------------------------------------
  // bpmn-js files a new or moved shape under the lanes of its nearest lane root, and a stage (an
  // expanded sub-process) is a root with no lanes of its own, so a step drawn inside a stage would
  // belong to no lane, and so to no role. The lane is where the step stands: file it there.

  function nested(shape) {
    for (var p = shape.parent; p; p = p.parent) { if (p.type === "bpmn:SubProcess") { return true; } }
    return false;
  }

  function laneAt(shape) {
    var cx = shape.x + shape.width / 2, cy = shape.y + shape.height / 2;
    var lanes = registry.filter(function (e) {
      return e.type === "bpmn:Lane" && cx >= e.x && cx <= e.x + e.width && cy >= e.y && cy <= e.y + e.height;
    });
    lanes.sort(function (a, b) { return a.width * a.height - b.width * b.height; }); // the innermost
    return lanes[0] || null;
  }

  function fileInLane(shape, removed) {
    if (!shape || shape.labelTarget || !/Task$|Event$|Gateway$|SubProcess$|CallActivity$/.test(shape.type) || !nested(shape)) { return; }
    var bo = shape.businessObject, lane = removed ? null : laneAt(shape);
    registry.filter(function (e) { return e.type === "bpmn:Lane"; }).forEach(function (l) {
      var refs = l.businessObject.get("flowNodeRef"), at = refs.indexOf(bo);
      if (at >= 0 && l !== lane) { refs.splice(at, 1); }
      if (l === lane && at < 0) { refs.push(bo); }
    });
  }

  ["create", "move"].forEach(function (verb) {
    modeler.on("commandStack.shape." + verb + ".postExecuted", function (e) { fileInLane(e.context.shape, false); });
    modeler.on("commandStack.shape." + verb + ".reverted", function (e) { fileInLane(e.context.shape, verb === "create"); });
  });
  modeler.on("commandStack.shape.delete.postExecuted", function (e) { fileInLane(e.context.shape, true); });
  modeler.on("commandStack.shape.delete.reverted", function (e) { fileInLane(e.context.shape, false); });

  // --- validate, deploy, download ------------------------------------------------------------------

  function clearMarks() {
    marked.forEach(function (id) { if (registry.get(id)) { canvas.removeMarker(id, "qz-error"); } });
    marked = [];
  }

  function report(data, okMessage) {
    clearMarks();
    results.textContent = "";
    var problems = data.problems || [];
    var warnings = data.warnings || [];
    if (!problems.length) {
      results.appendChild(el("p", { "class": "qz-ok" }, [okMessage]));
    } else {
      results.appendChild(el("h2", {}, [text.problems]));
      var list = el("ul", { "class": "qz-problems" });
      problems.forEach(function (p) {
        var where = [p.file, p.element].filter(Boolean).join(" · ");
        var item = el("li", { "data-element": p.element || "" }, [where ? where + ": " : "", p.message]);
        if (p.element && registry.get(p.element)) {
          canvas.addMarker(p.element, "qz-error");
          marked.push(p.element);
          item.classList.add("qz-link");
          item.addEventListener("click", function () { modeler.get("selection").select(registry.get(p.element)); });
        }
        list.appendChild(item);
      });
      results.appendChild(list);
    }
    if (warnings.length) {
      results.appendChild(el("h2", {}, [text.warnings]));
      results.appendChild(el("ul", { "class": "qz-warnings" }, warnings.map(function (w) {
        return el("li", {}, [(w.element ? w.element + ": " : "") + w.message]);
      })));
    }
  }

  function post(url) {
    return modeler.saveXML({ format: true }).then(function (saved) {
      return fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": root.dataset.csrf },
        body: JSON.stringify({ xml: saved.xml, key: state.key, version: state.version })
      });
    }).then(function (r) {
      return r.json().catch(function () { throw new Error(String(r.status)); });
    });
  }

  root.addEventListener("click", function (e) {
    var action = e.target.closest && e.target.closest("[data-action]");
    if (!action) { return; }
    var kind = action.dataset.action;
    if (kind === "validate") {
      post(root.dataset.validateUrl).then(function (data) { report(data, text.noProblems); say(""); })
        .catch(function () { say(text.requestFailed); });
    } else if (kind === "deploy") {
      if (!window.confirm(text.confirmDeploy)) { return; }
      post(root.dataset.deployUrl).then(function (data) {
        report(data, data.message || text.deployed);
        if (data.version) { state.key = data.process; state.version = data.version; say(data.message); }
      }).catch(function () { say(text.requestFailed); });
    } else if (kind === "draft") {
      post(root.dataset.draftUrl).then(function (data) {
        say(data.message || (data.problems && data.problems[0] && data.problems[0].message) || text.requestFailed);
      }).catch(function () { say(text.requestFailed); });
    } else if (kind === "download") {
      modeler.saveXML({ format: true }).then(function (saved) {
        var link = el("a", { href: URL.createObjectURL(new Blob([saved.xml], { type: "application/xml" })),
                             download: (state.key || "process") + ".bpmn" });
        document.body.appendChild(link);
        link.click();
        link.remove();
      });
    }
  });
}());
