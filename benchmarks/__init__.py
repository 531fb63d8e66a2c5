"""Benchmarks on the embedded broker: ``python -m benchmarks`` (or ``make bench``).

Each benchmark prints a small table and ends with one line ``bench NAME: ratio=R``: the
measured path's rate over its reference's, both taken in the same run on the same data.
"""
