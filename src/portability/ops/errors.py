"""Errors of the operator commands."""

from portability.errors import PortabilityError

__all__ = ["MissingTopicsError", "OpsError"]


class OpsError(PortabilityError):
    """An operator command cannot do what was asked; the message says what to do."""


class MissingTopicsError(OpsError):
    """Topics the command needs do not exist on the broker."""

    def __init__(self, topics: list[str], bootstrap: str, pipeline: bool = True) -> None:
        self.topics = topics
        what = f"no topic {topics[0]}" if len(topics) == 1 else f"no topics {', '.join(topics)}"
        fix = (
            "create the pipeline's topics with `portability topics create`"
            if pipeline
            else "`portability topics list` shows the pipeline's topics"
        )
        super().__init__(f"{what} on {bootstrap}: {fix}")
