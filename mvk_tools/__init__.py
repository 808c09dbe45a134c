"""Marine Video Kit tooling: collection layout and catalog, PyAV decoding, synthetic collections, the KIS benchmark."""
