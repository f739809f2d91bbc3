"""HTML pages: the question form (works without JavaScript; app.js enhances it)."""
from flask import Blueprint, current_app, g, render_template, request

from app.service import BackendUnavailable

bp = Blueprint("pages", __name__)
CHOICES = (("transformer", "Transformer"), ("memsizer", "MemSizer"), ("both", "Compare both"))


def render_form(question="", model=None, results=None, error=None, status=200):
    qa = current_app.extensions["qa_service"]
    return render_template("index.html", question=question, model=model or current_app.config["DEFAULT_MODEL"],
                           choices=CHOICES, results=results or [], error=error, models=qa.describe()), status


@bp.get("/")
def index():
    """The question form."""
    return render_form()


@bp.post("/")
def ask():
    """Answer the submitted question server-side (the no-JavaScript path)."""
    qa = current_app.extensions["qa_service"]
    question = request.form.get("question", "")
    model = request.form.get("model", current_app.config["DEFAULT_MODEL"])
    if request.form.get("action") == "example":
        return render_form(question=qa.example_question(), model=model)
    if model not in dict(CHOICES):
        return render_form(question, None, error="Choose Transformer, MemSizer or Compare both.", status=400)
    try:
        qa.validate(question)
    except ValueError as err:
        message = str(err)
        return render_form(question, model, error=message[:1].upper() + message[1:], status=400)
    g.model = model
    results = []
    for name in (("transformer", "memsizer") if model == "both" else (model,)):
        try:
            (answer,), latency_ms = qa.answer([question], name)
            results.append({"model": name, "answer": answer, "latency_ms": latency_ms})
        except BackendUnavailable as err:
            results.append({"model": name, "error": f"{name} is unavailable: {err}"})
    return render_form(question, model, results=results)
