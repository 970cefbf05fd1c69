"""Hydra configs shipped with mftrnn (config module ``mftrnn.conf``)."""
