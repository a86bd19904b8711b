// pgbastion console: the little behaviour pages need, without inline script (the
// Content-Security-Policy forbids it).
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // Clipboard API unavailable (plain http on a non-local address): select the text instead.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    document.execCommand("copy");
  }
  button.textContent = "Copied";
  button.classList.add("done");
  setTimeout(() => { button.textContent = "Copy"; button.classList.remove("done"); }, 2000);
});

// Confirm destructive actions marked with data-confirm.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset && form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
