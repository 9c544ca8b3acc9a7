// Polls the job's JSON document and updates the progress bar; reloads once when it finishes
// (to show the final list of failures). If the API asks for a key, the page reloads instead.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box || box.dataset.finished === "true") { return; }
  var bar = document.getElementById("job-progress");
  function set(field, value) {
    var el = box.querySelector('[data-field="' + field + '"]');
    if (el) { el.textContent = String(value); }
  }
  function poll() {
    fetch(box.dataset.statusUrl, { headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (job) {
        var finished = (job.done || 0) + (job.failed || 0);
        bar.max = job.total || 1;
        bar.value = finished;
        bar.textContent = Math.round(100 * finished / (job.total || 1)) + "%";
        ["status", "done", "failed", "total"].forEach(function (f) { set(f, job[f]); });
        if (["succeeded", "partial", "failed"].indexOf(job.status) >= 0) {
          window.location.reload();
        } else {
          window.setTimeout(poll, 1500);
        }
      })
      .catch(function () { window.setTimeout(function () { window.location.reload(); }, 3000); });
  }
  window.setTimeout(poll, 1000);
})();
