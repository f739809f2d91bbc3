// Progressive enhancement: submit the form in the background and swap in the answers, so the page
// does not reload. The server renders the results (one renderer for both paths, and every
// backend it registers); without JavaScript the form posts to / and the browser shows the page.
"use strict";

function showError(message) {
  const box = document.getElementById("question-error");
  box.textContent = message;
  document.getElementById("question").setAttribute("aria-invalid", message ? "true" : "false");
}

async function onSubmit(event) {
  const form = event.currentTarget;
  const action = event.submitter ? event.submitter.value : "answer";
  event.preventDefault();
  if (action === "example") {
    const body = await (await fetch("/example")).json();
    form.question.value = body.question;
    showError("");
    return;
  }
  const data = new FormData(form);
  data.set("action", action);
  const response = await fetch("/", { method: "POST", body: new URLSearchParams(data) });
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const outcome = page.getElementById("outcome");
  const error = page.getElementById("question-error");
  showError(error ? error.textContent : "");
  document.getElementById("outcome").replaceChildren(...(outcome ? outcome.childNodes : []));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("ask").addEventListener("submit", onSubmit);
});
