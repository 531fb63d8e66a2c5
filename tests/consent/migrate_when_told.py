"""Migrate the consent store at ``argv[1]`` when told: a process of the first-start test.

Prints ``ready`` once it is imported and has its engine, waits for a line on stdin, then
runs :func:`init_schema` and prints ``migrated``. The test tells every process at once, so
their migrations start together, as roles started together on an empty store do.
"""

from __future__ import annotations

import sys

from portability.consent import create_store_engine, init_schema


def main() -> None:
    engine = create_store_engine(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    init_schema(engine)
    engine.dispose()
    print("migrated", flush=True)


if __name__ == "__main__":
    main()
