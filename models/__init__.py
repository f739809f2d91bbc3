"""Character-level encoder-decoders with interchangeable attention: softmax or MemSizer."""
