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

// The theme toggle (every page's top bar): dark or light, remembered in localStorage;
// until first pressed the page follows the system's preference (theme.js, app.css).
(function themeToggle() {
  const button = document.getElementById("theme-toggle");
  if (!button) return;
  const root = document.documentElement;
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
  const isDark = () => (root.dataset.theme ? root.dataset.theme === "dark" : systemDark.matches);
  const show = () => button.setAttribute("aria-pressed", String(isDark()));
  button.hidden = false;
  show();
  systemDark.addEventListener("change", show);
  button.addEventListener("click", () => {
    const next = isDark() ? "light" : "dark";
    root.dataset.theme = next;
    try {
      window.localStorage.setItem("clinchat-theme", next);
    } catch (error) {
      // not remembered: this page keeps it
    }
    show();
  });
})();
