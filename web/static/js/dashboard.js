/* Dashboards (统计分析) and the large screen (大屏): draw each [data-chart] with ECharts from its JSON.
 *
 * The numbers come from /dashboard/data/<figure>.json, the same tables the page renders server-side,
 * so the charts add nothing the tables do not say. A chart's bars link to the drill-down page behind
 * them. On the large screen ([data-refresh]) every chart and key figure is fetched again on a timer.
 * No inline scripts or styles (CSP default-src 'self'): tooltips render as rich text on the canvas.
 */
(function () {
  "use strict";

  var RED = "#c8161d";
  var PALETTE = ["#c8161d", "#f0a020", "#3a7bd5", "#2e9e6a", "#8e5cc2", "#e0603a", "#5aa7c8", "#9a9a9a", "#6b4f2a"];
  var charts = [];
  var links = new WeakMap();  // chart box -> each series' drill-down links

  function fetchJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    });
  }

  function many(categories) { return categories.length > 12; }

  function baseOption(dark) {
    return {
      color: PALETTE,
      backgroundColor: "transparent",
      textStyle: { fontFamily: "PingFang SC, Microsoft YaHei, Noto Sans CJK SC, sans-serif" },
      tooltip: { trigger: "axis", renderMode: "richText", axisPointer: { type: "shadow" } },
      legend: { top: 0, type: "scroll", textStyle: { color: dark ? "#e8eef8" : "#333" } },
      grid: { left: 48, right: 24, top: 40, bottom: 70, containLabel: true }
    };
  }

  function categoryAxis(categories) {
    return {
      type: "category",
      data: categories,
      axisLabel: { interval: 0, rotate: categories.length > 4 ? 30 : 0, width: 120, overflow: "truncate" }
    };
  }

  function zoom(categories) {
    if (!many(categories)) { return []; }
    var end = Math.min(100, Math.round(1200 / categories.length));
    return [{ type: "slider", start: 0, end: end, bottom: 8 }, { type: "inside" }];
  }

  function empty(option, text) {
    option.title = { text: text, left: "center", top: "middle", textStyle: { color: "#999", fontSize: 14 } };
    return option;
  }

  function bars(spec, dark, stacked) {
    var option = baseOption(dark);
    if (!spec.categories.length) { return empty(option, spec.emptyText); }
    option.xAxis = categoryAxis(spec.categories);
    option.yAxis = { type: "value", minInterval: 1 };
    option.dataZoom = zoom(spec.categories);
    option.series = spec.series.map(function (s) {
      return { name: s.name, type: "bar", stack: stacked ? "total" : undefined, data: s.data,
               emphasis: { focus: "series" } };
    });
    return option;
  }

  function compliance(spec, dark) {
    var option = bars(spec, dark, false);
    if (!spec.categories.length) { return option; }
    option.series.forEach(function (series, i) {
      var min = spec.series[i].min;
      series.data = spec.series[i].data.map(function (value) {
        return value < min ? { value: value, itemStyle: { color: RED, opacity: i ? 0.6 : 1 } } : value;
      });
      series.markLine = { symbol: "none", silent: true, lineStyle: { type: "dashed" },
                          label: { formatter: "{b}" }, data: [{ yAxis: min, name: "≥ " + min }] };
    });
    option.color = ["#3a7bd5", "#2e9e6a"];
    option.xAxis.axisLabel.color = function (value, index) { return spec.short[index] ? RED : (dark ? "#e8eef8" : "#333"); };
    return option;
  }

  var GRADE_COLORS = ["#2e9e6a", "#3a7bd5", "#f0a020", "#c8161d", "#9a9a9a"];

  function total(items) { return items.reduce(function (sum, item) { return sum + item.value; }, 0); }

  /* A ring of the non-zero items (a zero slice only clutters), coloured best to worst. */
  function pie(items, dark, center, radius, colors) {
    var data = items.map(function (item, i) {
      return { name: item.name, value: item.value, itemStyle: { color: colors[i % colors.length] } };
    }).filter(function (item) { return item.value > 0; });
    return {
      type: "pie",
      radius: radius || ["35%", "65%"],
      center: center || ["50%", "55%"],
      data: data,
      label: { formatter: "{b}: {c}", color: dark ? "#e8eef8" : "#333" }
    };
  }

  function pledges(spec, dark) {
    var option = bars(spec, dark, false);
    if (!spec.categories.length) { return option; }
    if (!total(spec.pie)) { return option; }
    var colors = spec.pie.length === 3 ? ["#2e9e6a", "#f0a020", "#c8161d"] : GRADE_COLORS;
    option.grid.right = "38%";
    option.legend.data = spec.series.map(function (s) { return s.name; });
    option.series.push(Object.assign(pie(spec.pie, dark, ["81%", "55%"], ["22%", "42%"], colors), { name: spec.pie_name }));
    return option;
  }

  function grades(spec, dark) {
    var option = baseOption(dark);
    option.tooltip = { trigger: "item", renderMode: "richText" };
    if (!total(spec.pie)) { return empty(option, spec.emptyText); }
    option.series = [pie(spec.pie, dark, null, null, GRADE_COLORS)];
    return option;
  }

  var BUILDERS = {
    stacked: function (spec, dark) { return bars(spec, dark, true); },
    compliance: compliance,
    pledges: pledges,
    pie: grades
  };

  function option(json, dark, emptyText) {
    var spec = Object.assign({ emptyText: emptyText }, json.chart);
    var build = BUILDERS[spec.type];
    return build ? build(spec, dark) : empty(baseOption(dark), emptyText);
  }

  function draw(box) {
    var dark = box.classList.contains("dark");
    return fetchJSON(box.dataset.src).then(function (json) {
      var chart = echarts.getInstanceByDom(box) || echarts.init(box, dark ? "dark" : null, { renderer: "canvas" });
      if (!box.dataset.drawn) {
        chart.on("click", function (params) {
          var series = (links.get(box) || [])[params.seriesIndex];
          var href = series && series[params.dataIndex];
          if (href) { window.location.assign(href); }
        });
        charts.push(chart);
      }
      links.set(box, (json.chart.series || []).map(function (s) { return s.links || []; }));
      chart.setOption(option(json, dark, box.dataset.empty || ""), true);
      box.dataset.drawn = "1";
      box.removeAttribute("data-error");
      return json;
    }).catch(function () {
      box.setAttribute("data-error", "1");
      if (!box.dataset.drawn) { box.textContent = box.dataset.failed || ""; }
      return null;
    });
  }

  function updateKpis(json) {
    if (!json) { return; }
    Object.keys(json.totals || {}).forEach(function (key) {
      document.querySelectorAll('[data-kpi="' + json.figure + "." + key + '"]').forEach(function (el) {
        el.textContent = String(json.totals[key]);
      });
    });
  }

  function refreshAll() {
    var boxes = Array.prototype.slice.call(document.querySelectorAll("[data-chart]"));
    return Promise.all(boxes.map(function (box) { return draw(box).then(updateKpis); })).then(function () {
      var stamp = document.querySelector("[data-updated]");
      if (stamp) { stamp.textContent = new Date().toLocaleTimeString("zh-CN", { hour12: false }); }
    });
  }

  function start() {
    if (typeof echarts === "undefined") { return; }
    refreshAll();
    var screen = document.querySelector("[data-refresh]");
    var seconds = screen ? parseInt(screen.dataset.refresh, 10) : 0;
    if (seconds > 0) { window.setInterval(refreshAll, seconds * 1000); }
    var pending;
    window.addEventListener("resize", function () {
      window.clearTimeout(pending);
      pending = window.setTimeout(function () { charts.forEach(function (c) { c.resize(); }); }, 150);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
