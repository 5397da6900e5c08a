// Task forms: add and remove rows of a list (pledges, decomposed tasks) in place.
// Without this script the same buttons submit the form and the server redraws it with a row more
// or less (web/formrender.py), so nothing depends on it. Rows are numbered in their field names
// (pledges-3-target); the server reads them in order and ignores gaps, so a new row simply takes
// the next free number.
(function () {
  "use strict";

  function rowsOf(box) {
    var body = box.querySelector("[data-rows-body]");
    return Array.prototype.filter.call(body.children, function (el) { return el.hasAttribute("data-row"); });
  }

  function box(name) {
    return document.querySelector('[data-rows="' + CSS.escape(name) + '"]');
  }

  function refresh(container) {
    var rows = rowsOf(container);
    rows.forEach(function (row, i) {
      var number = row.querySelector("[data-row-number]");
      if (number) { number.textContent = String(i + 1); }
    });
    var count = container.querySelector("input[data-rows-count]");
    if (count) { count.value = String(rows.length); }
    var add = container.querySelector("[data-add-row]");
    if (add) { add.hidden = rows.length >= parseInt(container.getAttribute("data-max") || "50", 10); }
  }

  function addRow(button) {
    var name = button.getAttribute("data-add-row");
    var container = box(name);
    var template = container && container.querySelector('template[data-row-template="' + CSS.escape(name) + '"]');
    if (!template) { return false; }
    var next = 0;
    rowsOf(container).forEach(function (row) {
      var index = parseInt(row.getAttribute("data-row").slice(name.length + 1), 10);
      if (!isNaN(index) && index >= next) { next = index + 1; }
    });
    var html = template.innerHTML.split(name + "-__i__").join(name + "-" + next)
      .split("__n__").join(String(rowsOf(container).length + 1));
    container.querySelector("[data-rows-body]").insertAdjacentHTML("beforeend", html);
    refresh(container);
    var added = rowsOf(container).pop();
    var first = added && added.querySelector("input, select, textarea");
    if (first) { first.focus(); }
    return true;
  }

  function removeRow(button) {
    var row = button.closest("[data-row]");
    var container = row && row.closest("[data-rows]");
    if (!container) { return false; }
    row.remove();
    refresh(container);
    return true;
  }

  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-row]");
    if (add && addRow(add)) { event.preventDefault(); return; }
    var remove = event.target.closest("[data-remove-row]");
    if (remove && removeRow(remove)) { event.preventDefault(); }
  });
})();
