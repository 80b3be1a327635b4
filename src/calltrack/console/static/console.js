/* calltrack console: the overview's chart and the copy buttons; the pages work without it. */
(function () {
  "use strict";

  var PALETTE = ["#2f6fdf", "#e8743b", "#19a979", "#945ecf", "#ed4a7b", "#13a4b4",
                 "#bf9b00", "#6f7c91", "#b0b7c3"];

  /* Calls per day stacked by source: each series is drawn as the running sum up to it, the
     tallest first, so every band shows its own source; the legend gives the day's own count. */
  function drawChart() {
    var holder = document.getElementById("chart");
    var source = document.getElementById("chart-data");
    if (!holder || !source || !window.uPlot) { return; }
    var data = JSON.parse(source.textContent);
    var days = data.days;
    var xs = days.map(function (_, index) { return index; });
    var running = days.map(function () { return 0; });
    var stacked = data.series.map(function (s) {
      running = running.map(function (sum, i) { return sum + s.values[i]; });
      return running.slice();
    });
    var series = [{ label: holder.dataset.day || "", value: function (u, i) { return i == null ? "" : days[i]; } }];
    var columns = [xs];
    for (var i = data.series.length - 1; i >= 0; i--) {
      var own = data.series[i];
      var colour = PALETTE[own.other ? PALETTE.length - 1 : i % (PALETTE.length - 1)];
      series.push({
        label: own.other ? holder.dataset.other : (own.name || holder.dataset.none),
        stroke: colour,
        fill: colour,
        width: 0,
        points: { show: false },
        paths: window.uPlot.paths.bars({ size: [0.8, 48], align: 0 }),
        value: (function (values) {
          return function (u, v, si, index) { return index == null ? "" : values[index]; };
        })(own.values)
      });
      columns.push(stacked[i]);
    }
    var width = Math.max(320, holder.clientWidth || 800);
    new window.uPlot({
      width: width,
      height: 280,
      series: series,
      scales: { x: { time: false, range: [-0.5, days.length - 0.5] }, y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      axes: [
        { values: function (u, splits) {
            return splits.map(function (x) { return days[x] ? days[x].slice(5) : ""; });
          }, incrs: [1, 2, 5, 7, 14, 30] },
        { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] }
      ],
      legend: { live: true }
    }, columns, holder);
    holder.dataset.drawn = String(data.series.length);
  }

  /* A button with data-copy="ID" copies that element's text. */
  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var target = document.getElementById(button.dataset.copy);
        if (!target) { return; }
        var text = target.textContent;
        var done = function () {
          button.dataset.copied = "true";
          var label = button.textContent;
          button.textContent = button.dataset.done || label;
          setTimeout(function () { button.textContent = label; }, 1500);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { select(target); });
        } else {
          select(target);
          try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
        }
      });
    });
  }

  function select(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  /* A form with data-confirm asks first (revoking a key, removing a webhook). */
  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawChart();
    copyButtons();
    confirmations();
  });
})();
