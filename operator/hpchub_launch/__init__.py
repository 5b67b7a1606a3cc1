"""The node-side launcher: starts a Jupyter server and reports its port (standard library only)."""
