// shelfsync pages: the little script every page shares (no inline script anywhere; the
// Content-Security-Policy allows this file only). The pages work without it; it adds
// live updates, confirmations of destructive steps, and copy buttons.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A part of the page kept current: the server sends it rendered (and escaped) again
  // over Server-Sent Events whenever it changed.
  for (const part of document.querySelectorAll("[data-live]")) {
    const source = new EventSource(part.dataset.live);
    source.addEventListener("update", (event) => {
      part.innerHTML = event.data;
      part.dataset.updates = String(Number(part.dataset.updates || "0") + 1);
    });
    // The sign-in was revoked or ended: reloading leads to the sign-in page.
    source.addEventListener("signed-out", () => {
      source.close();
      window.location.reload();
    });
  }

  // Destructive steps ask first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }

  // Copy buttons (hidden without the script).
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", () => {
      const target = document.getElementById(button.dataset.copy);
      const done = () => { button.textContent = "Copied"; };
      const select = () => {
        const range = document.createRange();
        range.selectNodeContents(target);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(target.textContent).then(done, select);
      } else {
        select();
      }
    });
  }
});
