// The status page follows the coordinator's stream of pathway changes: on each change
// it asks the server for the rows again (same filters) and swaps them in. Without
// JavaScript the page is complete; it just does not update by itself.
(function () {
  var table = document.getElementById("pathways");
  var rows = document.getElementById("pathway-rows");
  var note = document.getElementById("live-note");
  if (!table || !rows || !window.EventSource) return;
  var query = table.getAttribute("data-query");
  var pending = null;
  function refresh(changed) {
    var url = "/status?" + (query ? query + "&" : "") + "fragment=rows";
    fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) return;
      return response.text().then(function (html) {
        rows.innerHTML = html;
        changed.forEach(function (id) {
          var row = document.getElementById("p-" + id);
          if (row) row.classList.add("updated");
        });
        note.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      });
    });
  }
  var changed = [];
  var stream = new EventSource(table.getAttribute("data-stream") || "/api/pathways/stream");
  stream.addEventListener("pathway", function (event) {
    try { changed.push(JSON.parse(event.data).patient_id); } catch (e) { return; }
    if (pending) return;
    pending = setTimeout(function () { pending = null; refresh(changed.splice(0)); }, 400);
  });
})();
