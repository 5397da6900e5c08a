/* The instance diagram: bpmn-js's navigated viewer over /instances/<id>/diagram.bpmn.
 * Reads everything from data-* attributes on [data-diagram-url] (no inline script: CSP).
 * If the viewer library or the file fails to load, the box says so instead of staying blank. */
(function () {
  "use strict";

  function ids(text) {
    return (text || "").split(/\s+/).filter(Boolean);
  }

  function fail(box, status) {
    box.classList.add("diagram-failed");
    status.textContent = box.dataset.failedText;
    status.hidden = false;
  }

  function mark(viewer, box) {
    var canvas = viewer.get("canvas");
    var registry = viewer.get("elementRegistry");
    var found = function (id) { return registry.get(id); };
    ids(box.dataset.completed).filter(found).forEach(function (id) {
      canvas.addMarker(id, "qz-completed");
    });
    var active = ids(box.dataset.active).filter(found);
    active.forEach(function (id) { canvas.addMarker(id, "qz-active"); });
    canvas.zoom("fit-viewport");
    if (active.length && canvas.zoom() < 0.6) {
      // A wide process shrinks to unreadable: show the current work at a readable size instead.
      canvas.zoom(0.8);
      canvas.scrollToElement(registry.get(active[0]), { top: 80, bottom: 80, left: 120, right: 120 });
    }
  }

  function show(box) {
    if (box.dataset.ready) { return; }
    box.dataset.ready = "1";
    var status = box.querySelector(".diagram-status");
    var container = box.querySelector(".diagram-canvas");
    if (typeof window.BpmnJS !== "function") { fail(box, status); return; }
    var viewer = new window.BpmnJS({ container: container });
    fetch(box.dataset.diagramUrl, { credentials: "same-origin", headers: { Accept: "application/xml" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (xml) { return viewer.importXML(xml); })
      .then(function () {
        mark(viewer, box);
        status.hidden = true;
        box.classList.add("diagram-ready");
      })
      .catch(function () { fail(box, status); });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-diagram-url]"), show);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
