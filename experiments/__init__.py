"""The course's experiments: plain PyTorch ``Experiment`` classes, one module each."""
