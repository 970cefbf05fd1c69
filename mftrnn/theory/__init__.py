"""Mean-field theory of signal propagation in randomly initialized LSTMs and GRUs (docs/theory.md).

This package never imports the trainer; it shares only the `meanfield` init and the configs.
"""
