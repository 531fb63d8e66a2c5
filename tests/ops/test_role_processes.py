"""The long-running commands as separate OS processes: start, readiness, signals, failures.

Against the session's Tansu, each role on its own topics and groups. What an operator
relies on: a role logs no ERROR on a normal start, stops on SIGTERM or SIGINT within seconds
with exit code 0 (also in the middle of a rebalance), a taken web port stops it before it
joins any group, and an expected failure ends in one line on stderr, never a traceback.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from portability.broker import EmbeddedBroker, free_port
from portability.ops.lifecycle import STOP_TIMEOUT_S
from waiting import wait_until

from .processes import RoleProcess, gone, role_environment, started

# A stop must end within the watchdog's bound, with room for a loaded machine.
_STOP_S = STOP_TIMEOUT_S + 4.0
# Starting the interpreter and importing the project, then failing: well under this.
_FAIL_S = 30.0


def _error_lines(process: RoleProcess) -> list[str]:
    return [line for line in process.stderr().splitlines() if line.startswith("error:")]


def assert_one_line_failure(process: RoleProcess, *fragments: str) -> str:
    """The process ended with one ``error:`` line, its last, holding ``fragments``; no
    traceback, and nothing of Python's about unawaited coroutines."""
    output = process.output()
    assert "Traceback" not in output, output
    assert "never awaited" not in output, output
    errors = _error_lines(process)
    assert len(errors) == 1, output
    assert process.stderr().strip().splitlines()[-1] == errors[0], output
    for fragment in fragments:
        assert fragment in errors[0], output
    return errors[0]


def assert_no_errors(process: RoleProcess) -> None:
    output = process.output()
    for marker in (" ERROR ", "Traceback", "Unclosed", "never awaited"):
        assert marker not in output, f"{marker!r} in the output:\n{output}"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 with a listener on it (not ours to serve)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("role", ["matcher", "worker"])
async def test_a_role_whose_web_port_is_taken_exits_before_joining_its_group(
    broker: EmbeddedBroker, tmp_path: Path, taken_port: int, role: str
) -> None:
    env = role_environment(tmp_path, kafka_bootstrap=broker.bootstrap, web_port=str(taken_port))

    async with started([role], env, tmp_path) as process:
        code = await process.exit_code(_FAIL_S)

    assert code == 1, process.output()
    assert_one_line_failure(
        process, f"127.0.0.1:{taken_port}", "address already in use", "PORTABILITY_WEB_PORT"
    )
    # The roles start only once the web server listens: no group was joined, nothing opened.
    output = process.output()
    assert "pipeline roles started" not in output
    assert "assigned" not in output
    assert "revoked" not in output


@pytest.mark.parametrize(
    ("role", "number"),
    [
        ("matcher", signal.SIGTERM),
        ("worker", signal.SIGINT),
        ("pipeline", signal.SIGTERM),
        ("messages", signal.SIGINT),
    ],
)
async def test_a_role_starts_without_errors_and_stops_on_a_signal(
    broker: EmbeddedBroker, tmp_path: Path, role: str, number: signal.Signals
) -> None:
    port = free_port()
    env = role_environment(tmp_path, kafka_bootstrap=broker.bootstrap, web_port=str(port))

    async with started([role], env, tmp_path) as process:
        await process.wait_healthy(port)
        assert_no_errors(process)  # a normal start: no ERROR (InconsistentGroupProtocol was)

        process.signal(number)
        code = await process.exit_code(_STOP_S)

    assert code == 0, process.output()
    assert_no_errors(process)
    assert f"{number.name} received: stopping" in process.stderr()
    assert f"web views on http://127.0.0.1:{port}" in process.stderr()


async def test_sigterm_in_the_middle_of_a_rebalance_stops_the_matcher(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A second matcher joining revokes the first one's partitions; SIGTERM then lands while
    the first waits in the rebalance. Its stop waited for the rebalance's listener, which
    waited for the lock the stop held: only SIGKILL ended it."""
    first_port, second_port = free_port(), free_port()
    env = role_environment(tmp_path, kafka_bootstrap=broker.bootstrap)

    async with (
        started(["matcher"], env | {"PORTABILITY_WEB_PORT": str(first_port)}, tmp_path) as first,
    ):
        await first.wait_healthy(first_port)
        async with started(
            ["matcher"], env | {"PORTABILITY_WEB_PORT": str(second_port)}, tmp_path
        ) as second:
            prefix = env["PORTABILITY_TOPIC_PREFIX"]
            await first.wait_for(f"matcher revoked {prefix}account.changes")
            first.signal(signal.SIGTERM)
            first_code = await first.exit_code(_STOP_S)

            await second.wait_healthy(second_port)
            second.signal(signal.SIGTERM)
            second_code = await second.exit_code(_STOP_S)

    assert (first_code, second_code) == (0, 0), first.output() + second.output()
    assert_no_errors(first)
    assert_no_errors(second)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; a Linux signal")
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_the_broker_takes_its_tansu_process_along(
    tmp_path: Path, number: signal.Signals
) -> None:
    """SIGTERM stops Tansu on the way out; SIGKILL leaves no way out, so Linux stops it (the
    parent-death signal). Either way its port is free again, not held by an orphan."""
    port = free_port()

    async with started(["broker", "--port", str(port)], role_environment(tmp_path), tmp_path) as (
        process
    ):
        await process.wait_for("embedded broker on")
        (tansu,) = process.children()
        process.signal(number)
        code = await process.exit_code(_STOP_S)
        await wait_until(lambda: gone(tansu), f"Tansu (pid {tansu}) ended", _STOP_S)

    assert code == (0 if number == signal.SIGTERM else -signal.SIGKILL), process.output()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # no listener left on it
        probe.bind(("127.0.0.1", port))


# --- expected failures ------------------------------------------------------------------------


async def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = role_environment(tmp_path, kafka_bootstrap=address, web_port=str(free_port()))

    async with started(["matcher"], env, tmp_path) as process:
        code = await process.exit_code(_FAIL_S)

    assert code == 1, process.output()
    assert_one_line_failure(process, f"cannot reach Kafka at {address}")


async def test_a_bad_broker_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = role_environment(tmp_path, kafka_bootstrap="kafka:9092:x")

    async with started(["worker"], env, tmp_path) as process:
        code = await process.exit_code(_FAIL_S)

    assert code == 2, process.output()
    assert_one_line_failure(process, "PORTABILITY_KAFKA_BOOTSTRAP", "kafka:9092:x", "host:port")


async def test_a_bad_privacy_policy_file_is_one_line_and_exit_2(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: [unclosed\n")
    env = role_environment(
        tmp_path,
        kafka_bootstrap=broker.bootstrap,
        web_port=str(free_port()),
        privacy_policy_path=str(policy),
    )

    async with started(["matcher"], env, tmp_path) as process:
        code = await process.exit_code(_FAIL_S)

    assert code == 2, process.output()
    assert_one_line_failure(process, str(policy), "not valid YAML")


async def test_the_api_with_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = role_environment(tmp_path, kafka_bootstrap=address, api_port="0")

    async with started(["api"], env, tmp_path) as process:
        code = await process.exit_code(_FAIL_S)

    assert code == 1, process.output()
    assert_one_line_failure(process, f"cannot reach Kafka at {address}")  # no unawaited sweep


async def test_the_api_on_a_taken_port_is_one_line_and_exit_1(
    tmp_path: Path, taken_port: int
) -> None:
    env = role_environment(tmp_path, api_port=str(taken_port))

    async with started(["api"], env, tmp_path) as process:
        code = await process.exit_code(_FAIL_S)

    assert code == 1, process.output()
    assert_one_line_failure(process, f"127.0.0.1:{taken_port}", "PORTABILITY_API_PORT")


async def test_the_api_stops_on_sigterm(tmp_path: Path) -> None:
    env = role_environment(tmp_path, api_port="0")

    async with started(["api"], env, tmp_path) as process:
        await process.wait_for("consent API on http://127.0.0.1:")
        process.signal(signal.SIGTERM)
        code = await process.exit_code(_STOP_S)

    assert code == 0, process.output()
    assert_no_errors(process)
