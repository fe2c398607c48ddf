"""Training: the three phases of the conversion pipeline, evaluation, resume, torchrun."""
