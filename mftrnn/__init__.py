"""mftrnn: mean-field theory and critical initialization of LSTMs and GRUs (Gilboa et al. 2019)."""

__version__ = "0.1.0"
