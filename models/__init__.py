"""Character-level encoder-decoders with plug-in backends (see `backend.py` and `registry.py`)."""
