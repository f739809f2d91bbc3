"""Serving: the inference service behind the web app (the QA service, its micro-batcher, its settings and
what it reports per backend). Imports models and training, never app."""
