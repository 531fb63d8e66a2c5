"""The sealing of signing secrets (portability.sealing): what it hides, what it refuses, and
where its keys come from. No message, repr or file other than the key's own holds key
material or a secret."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from portability.sealing import (
    KEY_FILE_NAME,
    SecretsKey,
    SecretsKeyError,
    SecretsKeys,
    UnsealError,
    key_id_of,
    write_key_file,
)
from portability.settings import Settings
from portability.webhooks.signing import generate_secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def ring(*ids: str) -> SecretsKeys:
    return SecretsKeys([SecretsKey.generate(key_id) for key_id in ids], "the test ring")


def test_sealed_secret_opens_and_shows_nothing_of_it() -> None:
    keys = ring("k1")
    sealed = keys.seal(SECRET, "app_1")
    raw = base64.b64decode(SECRET.removeprefix("whsec_"))

    assert sealed.startswith("sealed:v1:k1:")
    assert "whsec_" not in sealed
    assert SECRET.removeprefix("whsec_") not in sealed
    data = base64.urlsafe_b64decode(sealed.rsplit(":", 1)[1] + "==")
    assert raw not in data
    assert SECRET.encode() not in data
    assert keys.open(sealed, "app_1") == SECRET
    assert keys.seal(SECRET, "app_1") != sealed  # a fresh nonce each time
    assert key_id_of(sealed) == "k1"


def test_a_sealed_secret_is_bound_to_its_app() -> None:
    keys = ring("k1")
    with pytest.raises(UnsealError, match="does not open it"):
        keys.open(keys.seal(SECRET, "app_1"), "app_2")


def test_the_first_key_seals_and_every_key_opens() -> None:
    k1 = SecretsKey.generate("k1")
    sealed_before = SecretsKeys([k1], "the old ring").seal(SECRET, "app_1")
    both = SecretsKeys([SecretsKey.generate("k2"), k1], "both")

    assert both.sealing_key_id == "k2"
    assert both.open(sealed_before, "app_1") == SECRET
    assert key_id_of(both.seal(SECRET, "app_1")) == "k2"


def test_what_cannot_be_opened_is_named() -> None:
    sealed = ring("k1").seal(SECRET, "app_1")
    with pytest.raises(UnsealError, match=r"key 'k1', which the test ring does not hold \(it"):
        ring("k2").open(sealed, "app_1")
    with pytest.raises(UnsealError, match="key 'k1' of the test ring does not open it"):
        ring("k1").open(sealed, "app_1")  # another key under the same id
    with pytest.raises(UnsealError, match="not a sealed value"):
        ring("k1").open(SECRET, "app_1")
    with pytest.raises(UnsealError, match="damaged"):
        ring("k1").open(sealed[:30], "app_1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("no-colon-here", "is not <key id>:<base64url key>"),
        ("k1:!!notbase64!!", "key 'k1' of PORTABILITY_SECRETS_KEY is not base64url"),
        ("k1:" + base64.urlsafe_b64encode(b"short").decode(), "must be 32 bytes, not 5"),
        ("bad/id:" + "A" * 43, "a key id must be 1 to 32 letters"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_them(text: str, message: str) -> None:
    with pytest.raises(SecretsKeyError, match=message) as refused:
        SecretsKeys.parse(text)
    material = text.partition(":")[2]
    assert not material or material not in str(refused.value)


def test_a_key_id_twice_is_refused() -> None:
    key = SecretsKey.generate("k1")
    with pytest.raises(SecretsKeyError, match="k1 twice"):
        SecretsKeys.parse(f"{key.text()},{SecretsKey.generate('k1').text()}")


def test_reprs_hold_ids_only() -> None:
    key = SecretsKey.generate("k1")
    keys = SecretsKeys.parse(key.text())
    settings = Settings(secrets_key=SecretStr(key.text()))
    material = key.text().partition(":")[2]
    for shown in (repr(key), repr(keys), repr(settings), str(settings.model_dump())):
        assert material not in shown
    assert repr(keys) == "SecretsKeys(k1 from PORTABILITY_SECRETS_KEY)"


def test_settings_key_seals_and_opens(tmp_path: Path) -> None:
    text = ",".join(SecretsKey.generate(key_id).text() for key_id in ("k2", "k1"))
    keys = SecretsKeys.from_settings(
        Settings(data_dir=tmp_path, development_mode=False, secrets_key=SecretStr(text))
    )
    assert (keys.key_ids, keys.source) == (("k2", "k1"), "PORTABILITY_SECRETS_KEY")
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_development_mode_keeps_a_key_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    sealed = SecretsKeys.from_settings(settings).seal(SECRET, "app_1")

    path = tmp_path / "data" / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SecretsKeys.from_settings(settings)  # another process, later: the same key
    assert again.open(sealed, "app_1") == SECRET
    assert again.source == f"the key file {path}"
    assert list(path.parent.iterdir()) == [path]  # no draft left behind


def test_processes_starting_together_share_one_development_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    made: list[SecretsKeys] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        made.append(SecretsKeys.from_settings(settings))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    sealed = made[0].seal(SECRET, "app_1")
    assert [keys.open(sealed, "app_1") for keys in made] == [SECRET] * 4


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    SecretsKeys.from_settings(settings)
    path = tmp_path / KEY_FILE_NAME
    os.chmod(path, 0o644)  # the mistake under test
    with pytest.raises(SecretsKeyError, match=f"may be read by others .*chmod 600 {path}"):
        SecretsKeys.from_settings(settings)


def test_outside_development_mode_a_key_is_required(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, development_mode=False)
    with pytest.raises(SecretsKeyError, match="PORTABILITY_SECRETS_KEY is not set"):
        SecretsKeys.from_settings(settings)
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_a_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_key_file(path, [SecretsKey.generate("k1")])
    before = path.read_text()
    with pytest.raises(FileExistsError):
        write_key_file(path, [SecretsKey.generate("k1")])
    assert path.read_text() == before


def test_every_generated_secret_round_trips() -> None:
    keys = ring("k1")
    for _ in range(50):
        secret = generate_secret()
        assert keys.open(keys.seal(secret, "app"), "app") == secret
