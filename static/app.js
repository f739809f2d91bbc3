// Progressive enhancement: answer through POST /answer without a page reload.
// Without JavaScript the form posts to / and the server renders the same results.
"use strict";

const NAMES = { transformer: "Transformer", memsizer: "MemSizer" };

function showError(message) {
  const box = document.getElementById("question-error");
  box.textContent = message;
  document.getElementById("question").setAttribute("aria-invalid", message ? "true" : "false");
}

function resultCard(model, body) {
  const card = document.createElement("div");
  card.className = "result";
  card.dataset.model = model;
  const title = document.createElement("h2");
  title.textContent = NAMES[model];
  card.appendChild(title);
  const text = document.createElement("p");
  if (body.error) {
    text.className = "error";
    text.textContent = body.error.message;
    card.appendChild(text);
    return card;
  }
  text.className = "answer";
  text.textContent = body.answer;
  const latency = document.createElement("p");
  latency.className = "latency";
  latency.textContent = body.latency_ms.toFixed(1) + " ms";
  card.append(text, latency);
  return card;
}

async function ask(question, model) {
  const response = await fetch("/answer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ question: question, model: model }),
  });
  return response.json();
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
  const question = form.question.value;
  const choice = form.model.value;
  const models = choice === "both" ? ["transformer", "memsizer"] : [choice];
  const results = document.getElementById("results");
  const bodies = [];
  for (const model of models) {
    bodies.push(await ask(question, model));
  }
  // a question the API rejects is a field error, the same for every backend
  const invalid = bodies.find((b) => b.error && b.error.code !== "model_unavailable");
  if (invalid) {
    showError(invalid.error.message);
    results.replaceChildren();
    return;
  }
  showError("");
  results.replaceChildren(...models.map((m, i) => resultCard(m, bodies[i])));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("ask").addEventListener("submit", onSubmit);
});
