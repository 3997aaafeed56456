// The document library: poll the progress of queued versions, confirm retiring.
// Loaded from 'self' (strict CSP); reads only ids from the page, writes only text.
"use strict";

const POLL_MS = 2000;

function updateRow(row, doc) {
  const latest = doc.latest;
  if (!latest) return false;
  row.querySelector(".doc-status").textContent = latest.status;
  row.querySelector(".doc-error").textContent = latest.error || "";
  row.querySelector(".doc-progress").value = latest.progress;
  row.querySelector(".doc-percent").textContent = latest.progress + "%";
  return latest.status === "queued" || latest.status === "processing";
}

async function poll(row) {
  const id = row.dataset.documentId;
  try {
    const response = await fetch("/api/v1/documents/" + encodeURIComponent(id), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      window.location.reload(); // signed out (idle timeout): show the sign-in page
      return;
    }
    if (response.ok && !updateRow(row, await response.json())) {
      window.location.reload(); // done: show which version is searched now
      return;
    }
  } catch (error) {
    // network hiccup: try again at the next tick
  }
  window.setTimeout(() => poll(row), POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("tr[data-poll='yes']").forEach((row) => {
    window.setTimeout(() => poll(row), POLL_MS);
  });
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
});
