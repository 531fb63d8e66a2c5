"""Tests of the privacy policy: its file, its engine, its audience figures."""
