"""hpchub benchmarks: hpchub and batchspawner side by side on the same real stack.

Run ``python -m benchmarks [--mode quick|full] [--scenario N ...] [--out DIR]``
(``make bench``). See docs/performance.md.
"""
