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
    // The whole page again, so the figures above the rows follow the rows.
    var url = "/status" + (query ? "?" + query : "");
    fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) return;
      return response.text().then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var freshRows = fresh.getElementById("pathway-rows");
        var freshCounts = fresh.querySelector(".counts dl");
        var counts = document.querySelector(".counts dl");
        if (freshRows) rows.innerHTML = freshRows.innerHTML;
        if (freshCounts && counts) counts.innerHTML = freshCounts.innerHTML;
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
