// The report map's script: draws the figure (put in by pipeline/report.py), then
// searches account names, typed or given as `#search=NAME` in the address. Names are compared
// HTML-escaped, as the figure holds them, and shown with textContent, never as markup.
(function () {
  var f = FIGURE;
  var map = document.getElementById('map');
  var box = document.getElementById('map-search');
  var out = document.getElementById('map-found');
  var ESCAPES = [['&', '&amp;'], ['<', '&lt;'], ['>', '&gt;'], ['"', '&quot;'], ["'", '&#x27;']];
  function escaped(text) {
    return ESCAPES.reduce(function (t, e) { return t.split(e[0]).join(e[1]); }, text);
  }
  function unescaped(text) {
    return ESCAPES.slice().reverse().reduce(function (t, e) {
      return t.split(e[1]).join(e[0]);
    }, text);
  }
  function search(query) {
    var wanted = escaped(query.trim().toLowerCase());
    var found = [];
    var selected = f.data.map(function (trace) {
      if (!wanted) { return null; }
      var hits = [];
      (trace.customdata || []).forEach(function (point, i) {
        if (point[0].toLowerCase().indexOf(wanted) >= 0) {
          hits.push(i);
          found.push(unescaped(point[0]));
        }
      });
      return hits;
    });
    Plotly.restyle(map, {selectedpoints: selected});
    map.dataset.matches = String(found.length);
    out.textContent = !wanted ? '' : found.length === 0 ? 'no account matches'
      : found.length + (found.length === 1 ? ' account matches: ' : ' accounts match: ')
        + found.slice(0, 10).join(', ') + (found.length > 10 ? ', \u2026' : '');
  }
  var started = performance.now();
  Plotly.newPlot(map, f.data, f.layout, {displaylogo: false, responsive: true}).then(function () {
    map.dataset.drawn = String(f.data.length);
    map.dataset.drawMs = String(Math.round(performance.now() - started));
    box.addEventListener('input', function () { search(box.value); });
    var asked = /^#search=(.*)$/.exec(window.location.hash);
    if (asked) { box.value = decodeURIComponent(asked[1]); search(box.value); }
  });
})();
