// FOBO Broker console: progressive enhancement only; every page works without this file.
// - [data-copy="ID"] buttons copy the value of the input ID to the clipboard (hidden without JS).
// - form[data-confirm="..."] asks before submitting.
"use strict";

async function copyValue(button) {
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById(button.dataset.copy + "-status");
  if (!field) return;
  try {
    await navigator.clipboard.writeText(field.value);
  } catch (error) {
    field.select();
    document.execCommand("copy");
  }
  if (status) status.textContent = "Copied to the clipboard.";
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", () => copyValue(button));
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
