"""The chaos suite: the pipeline's roles as OS processes under crashes, pauses, scaling and
outages, with a platform publishing, consent churn, a misbehaving receiving app, and an
oracle that shares no code with the pipeline (docs/chaos.md). Run it: ``python -m chaos``.
"""
