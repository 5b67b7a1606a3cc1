"""Slurm backends: the interface (``base``) and its implementations (``rest``, ...)."""
