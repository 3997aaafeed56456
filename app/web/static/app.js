// ClinChat: small progressive enhancements. Loaded from 'self'; no inline script anywhere.
"use strict";

// The session's CSRF token, for fetch() calls that change state.
function csrfToken() {
  return document.body.dataset.csrf || "";
}
window.clinchat = { csrfToken };
