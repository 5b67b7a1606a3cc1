"""The baseline: JupyterHub + batchspawner's SlurmSpawner, as its documentation recommends."""
