// ClinChat: small progressive enhancements. Loaded from 'self'; no inline script anywhere.
"use strict";

// The session's CSRF token, for fetch() calls that change state.
function csrfToken() {
  return document.body.dataset.csrf || "";
}
window.clinchat = { csrfToken };

// Automatic logoff on screen: the server forgets a session after its idle timeout
// (every request renews it). When that time has passed since this page's last
// request, leave the page, so no patient information stays on an unattended screen.
(function idleLogoff() {
  const seconds = Number(document.body.dataset.idleTimeout || 0);
  if (!seconds) return;
  let timer = 0;
  function arm() {
    clearTimeout(timer);
    timer = setTimeout(() => {
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    }, seconds * 1000);
  }
  const originalFetch = window.fetch.bind(window);
  window.fetch = (...args) => {
    arm();
    return originalFetch(...args);
  };
  arm();
})();
