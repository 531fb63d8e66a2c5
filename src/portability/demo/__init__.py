"""The demo: the whole pipeline on one machine, checked end to end."""

from portability.demo.report import DemoReport, Progress
from portability.demo.runner import DemoOptions, run_demo

__all__ = ["DemoOptions", "DemoReport", "Progress", "run_demo"]
