// FOBO Broker console: progressive enhancement only; every page works without this file.
// - [data-copy="ID"] buttons copy the value of the input ID to the clipboard (hidden without JS).
// - form[data-confirm="..."] asks before submitting.
// - [data-when="ID"][data-when-values="a b"] is shown only while the control ID has one of those
//   values (a connector's auth fields follow its auth type); without JS they all stay visible,
//   each saying which option it belongs to, and the server ignores those that do not apply.
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

function followChoices() {
  const dependents = document.querySelectorAll("[data-when]");
  const controls = new Set();
  const apply = () => {
    for (const element of dependents) {
      const control = document.getElementById(element.dataset.when);
      if (!control) continue;
      const wanted = element.dataset.whenValues.split(" ");
      element.hidden = !wanted.includes(control.value);
    }
  };
  for (const element of dependents) {
    const control = document.getElementById(element.dataset.when);
    if (control && !controls.has(control)) {
      controls.add(control);
      control.addEventListener("change", apply);
    }
    for (const note of element.querySelectorAll(".applies")) note.hidden = true;
  }
  apply();
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
  followChoices();
});
