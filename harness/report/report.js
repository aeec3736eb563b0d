// Draws the figures (plotly specs embedded as JSON) and wires the "expand all" buttons.
(function () {
  "use strict";
  var figures = {};
  try {
    figures = JSON.parse(document.getElementById("figures").textContent || "{}");
  } catch (e) {
    figures = {};
  }
  var nodes = document.querySelectorAll("[data-figure]");
  for (var i = 0; i < nodes.length; i++) {
    var node = nodes[i];
    var fig = figures[node.getAttribute("data-figure")];
    if (!fig) continue;
    if (typeof Plotly === "undefined") {
      node.textContent = "The charting library did not load.";
      continue;
    }
    Plotly.newPlot(node, fig.data, fig.layout, {
      responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]
    });
  }
  var buttons = document.querySelectorAll("button.toggle-all");
  for (var j = 0; j < buttons.length; j++) {
    buttons[j].addEventListener("click", function (ev) {
      var box = ev.target.closest(".examples");
      var all = box.querySelectorAll("details.example");
      var open = ev.target.textContent === "expand all";
      for (var k = 0; k < all.length; k++) all[k].open = open;
      ev.target.textContent = open ? "collapse all" : "expand all";
    });
  }
})();
