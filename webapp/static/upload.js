// Dataset upload: drag-and-drop or picker, sent by XHR so the progress bar can follow
// the upload. Without JavaScript the form still posts normally.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = form.querySelector("input[type=file]");
  const zone = document.getElementById("dropzone");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const button = document.getElementById("upload-button");
  const maxBytes = Number(form.dataset.maxBytes);

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "muted";
  }

  function chosen() {
    const file = input.files[0];
    if (!file) return;
    zone.textContent = file.name + " (" + Math.ceil(file.size / 1024) + " KB)";
    const name = form.querySelector("input[name=name]");
    if (name && !name.value) name.value = file.name.replace(/\.[^.]+$/, "");
    if (file.size > maxBytes) say("This file is larger than the " + form.dataset.limit + " limit.", true);
    else say("", false);
  }

  input.addEventListener("change", chosen);
  // A file picked before this script ran (a fast user, or the browser restoring the form).
  if (input.files.length) chosen();
  zone.addEventListener("click", () => input.click());
  ["dragenter", "dragover"].forEach((ev) =>
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) =>
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (e) => {
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; chosen(); }
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = input.files[0];
    if (!file) return say("Choose a file first.", true);
    // Checked here to save the wait; the server enforces the limit regardless.
    if (file.size > maxBytes) return say("This file is larger than the " + form.dataset.limit + " limit.", true);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable) return;
      const pct = Math.round((100 * ev.loaded) / ev.total);
      bar.value = pct;
      say("Uploading… " + pct + "%", false);
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status < 300 && body.redirect) { say("Uploaded. Validating…", false); window.location = body.redirect; return; }
      button.disabled = false;
      say(body.error || "Upload failed (HTTP " + xhr.status + ").", true);
    });
    xhr.addEventListener("error", () => { button.disabled = false; say("The upload was interrupted.", true); });
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    xhr.send(new FormData(form));
  });
})();
