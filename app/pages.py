"""HTML pages: the question form (works without JavaScript; app.js enhances it) and where each
backend is reliable."""
from flask import Blueprint, current_app, g, render_template, request

from app.charts import accuracy_chart, attribution_cells, backend_colour
from models.task import Assessment
from models.tokenizer import QuestionError
from serving.catalog import RELIABILITY_SPLITS

bp = Blueprint("pages", __name__)
COMPARE = "all"  # the select's value for "every backend side by side"
SPLIT_TITLES = {"interpolate": "Interpolate test (numbers of about 8 digits)",
                "train": "Training distribution (numbers of 1-10 digits)",
                "extrapolate": "Extrapolate test (12-digit numbers, longer than any in training)"}


def service():
    return current_app.extensions["qa_service"]


def choices(models) -> list[tuple[str, str]]:
    """(value, label) of the backend select: each backend, then all of them side by side."""
    return [(m["name"], m["display_name"]) for m in models] + [
        (COMPARE, "Compare both" if len(models) == 2 else "Compare all")]


def reliability_charts(models) -> list:
    """One chart per split from the evaluations recorded in each checkpoint's config.json."""
    colours = {m["display_name"]: backend_colour(i) for i, m in enumerate(models)}
    charts = []
    for split in RELIABILITY_SPLITS:
        series = {m["display_name"]: m["reliability"][split]["per_place"]
                  for m in models if split in m.get("reliability", {})}
        if series:
            charts.append(accuracy_chart(SPLIT_TITLES[split], series, colours))
    return charts


def render_form(question="", model=None, results=None, check=None, error=None, status=200):
    models = service().describe()
    return render_template("index.html", question=question, model=model or current_app.config["DEFAULT_MODEL"],
                           choices=choices(models), results=results or [], check=check, error=error,
                           models=models, charts=reliability_charts(models)), status


@bp.get("/")
def index():
    """The question form."""
    return render_form()


@bp.post("/")
def ask():
    """Answer the submitted question server-side (the no-JavaScript path, and app.js's too)."""
    qa = service()
    question = request.form.get("question", "")
    model = request.form.get("model", current_app.config["DEFAULT_MODEL"])
    if request.form.get("action") == "example":
        return render_form(question=qa.example_question(), model=model)
    if model not in (*qa.backends, COMPARE):
        return render_form(question, None, error="Choose a backend or Compare.", status=400)
    g.model = model
    names = qa.backends if model == COMPARE else (model,)
    try:
        outcomes = qa.compare(question, names, explain=request.form.get("action") == "explain")
    except QuestionError as err:
        return render_form(question, model, error=err.message[:1].upper() + err.message[1:], status=400)
    # reasons depend on each backend's training mix: the warning box holds those every backend
    # shares, a result lists its own others
    assessments = {name: reply.assessment if reply else qa.assess(qa.asked(question), name)
                   for name, reply, _ in outcomes}
    shared = [r for r in assessments[names[0]].reasons if all(r in a.reasons for a in assessments.values())]
    results = [{"model": name, "error": error} if reply is None else
               {"model": name, "answer": reply.answer, "latency_ms": reply.latency_ms, "correct": reply.check["correct"],
                "reasons": [r for r in reply.assessment.reasons if r not in shared], "attribution": reply.attribution,
                "cells": attribution_cells(reply.attribution) if reply.attribution else None}
               for name, reply, error in outcomes]
    check = Assessment(assessments[names[0]].expected, tuple(shared))
    return render_form(qa.asked(question), model, results=results, check=check)
