# Two commands for a newcomer: `make serve` and `make test`. Everything installs into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install chromium test test-fast serve data bench clean

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's chromium through Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The whole suite, slow (real gunicorn, browser, DDP) tests included, on two worker processes.
test: $(STAMP) chromium
	$(PY) -m pytest -q -n 2

# Everything except the tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

serve: $(STAMP)
	@ls checkpoints/*/config.json >/dev/null 2>&1 || \
	  { echo "checkpoints/ holds no trained model: train one with '$(PY) -m training.train --model NAME'" \
	         "(NAME: any backend in models/registry.py) first."; exit 1; }
	GUNICORN_BIND=$(HOST):$(PORT) $(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

# Fresh DeepMind-format test files (seeds never used by training).
data: $(STAMP)
	$(PY) -m training.data --split interpolate --n 10000 --seed 777 --out data/interpolate/numbers__place_value.txt
	$(PY) -m training.data --split extrapolate --n 10000 --seed 778 --out data/extrapolate/numbers__place_value_big.txt
	$(PY) -m training.data --split train --n 1000 --seed 781 --beyond-digits --out data/beyond/numbers__place_value_beyond.txt

clean:
	rm -rf $(VENV) .pytest_cache

# Re-measure on this machine what benchmarks/REPORT.md shows, then regenerate it (and the README's table).
# GPU results (results/*_gpu.*) come from the same scripts run with --device cuda; one-off studies
# live in benchmarks/studies/ and are run by hand.
bench: $(STAMP)
	$(PY) -m benchmarks.shipped_accuracy
	$(PY) -m benchmarks.train_throughput --device cpu --precisions fp32 --steps 8
	$(PY) -m benchmarks.serving
	$(PY) -m benchmarks.http_load --concurrency 1,16,64 --requests 300 --max-seconds 20 --settings default
	$(PY) -m benchmarks.decode_scaling --device cpu --repeats 1
	$(PY) -m benchmarks.slim_memory --device cpu --max-seconds 400
	$(PY) -m benchmarks.slim_memory --gradients --lengths 16384 --slim-slices 64
	$(PY) -m benchmarks.attribution
	$(PY) -m benchmarks.report
