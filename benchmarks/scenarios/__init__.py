"""One module per scenario of issue 7; each has ``run(stack, mode) -> dict``."""
