// The colour theme, before the page is painted (loaded without defer in <head>, from
// 'self'): the reader's choice from localStorage ("light" or "dark") as <html
// data-theme>; none kept means the system's preference (app.css, prefers-color-scheme).
// app.js wires the toggle button.
"use strict";
(function theme() {
  try {
    const chosen = window.localStorage.getItem("clinchat-theme");
    if (chosen === "light" || chosen === "dark") document.documentElement.dataset.theme = chosen;
  } catch (error) {
    // storage refused (privacy settings): the system's preference
  }
})();
