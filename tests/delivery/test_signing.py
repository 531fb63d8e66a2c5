"""Standard Webhooks signing, checked against the unmodified ``standardwebhooks`` verifier."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from portability.errors import PortabilityError
from portability.webhooks.signing import (
    SigningError,
    generate_secret,
    sign,
    signature_header,
    validate_secret,
    webhook_headers,
)

BODY = b'{"type":"portability.delta","data":{"consent_id":"c-1"}}'
MSG_ID = "msg_0123456789abcdef0123456789abcdef"


def test_generated_secret_is_whsec_and_24_random_bytes() -> None:
    secret = generate_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert generate_secret() != secret


def test_matches_the_standard_webhooks_reference_vector() -> None:
    # The vector of the Standard Webhooks reference libraries' own test suites.
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_standardwebhooks() -> None:
    secret = generate_secret()

    headers = webhook_headers([secret], MSG_ID, BODY)

    assert Webhook(secret).verify(BODY, headers) == {
        "type": "portability.delta",
        "data": {"consent_id": "c-1"},
    }
    assert headers["webhook-id"] == MSG_ID
    assert headers["content-type"] == "application/json"


def test_timestamp_is_whole_seconds_of_now() -> None:
    headers = webhook_headers([generate_secret()], MSG_ID, BODY, now=1_700_000_000.9)

    assert headers["webhook-timestamp"] == "1700000000"


def test_during_rotation_each_secret_verifies_alone() -> None:
    old, new, stranger = generate_secret(), generate_secret(), generate_secret()

    headers = webhook_headers([old, new], MSG_ID, BODY)

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(stranger).verify(BODY, headers)


def test_signature_header_lists_one_signature_per_secret_in_order() -> None:
    first, second = generate_secret(), generate_secret()

    header = signature_header([first, second], MSG_ID, 1_700_000_000, BODY)

    assert header == " ".join(
        [sign(first, MSG_ID, 1_700_000_000, BODY), sign(second, MSG_ID, 1_700_000_000, BODY)]
    )


def test_tampered_body_fails_verification() -> None:
    secret = generate_secret()
    headers = webhook_headers([secret], MSG_ID, BODY)

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY.replace(b"c-1", b"c-2"), headers)


def test_changed_message_id_fails_verification() -> None:
    secret = generate_secret()
    headers = webhook_headers([secret], MSG_ID, BODY)
    headers["webhook-id"] = "msg_other"

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize(("offset_s", "message"), [(-301, "too old"), (301, "too new")])
def test_timestamp_outside_five_minutes_fails_verification(offset_s: int, message: str) -> None:
    secret = generate_secret()

    headers = webhook_headers([secret], MSG_ID, BODY, now=time.time() + offset_s)

    with pytest.raises(WebhookVerificationError, match=message):
        Webhook(secret).verify(BODY, headers)


def test_unpadded_secret_signs_as_the_reference_verifier_reads_it() -> None:
    padded = "whsec_" + base64.b64encode(b"0123456789abcdefghij").decode()  # 20 bytes: padded
    unpadded = padded.rstrip("=")
    assert unpadded != padded

    headers = webhook_headers([unpadded], MSG_ID, BODY)

    Webhook(padded).verify(BODY, headers)
    Webhook(unpadded).verify(BODY, headers)


@pytest.mark.parametrize(
    "secret",
    ["", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!!!", "whsec_a", "whsec_ab cd"],
)
def test_malformed_secret_raises_signing_error(secret: str) -> None:
    with pytest.raises(SigningError, match="signing secret"):
        sign(secret, MSG_ID, 1_700_000_000, BODY)
    with pytest.raises(SigningError):
        validate_secret(secret)


def test_signing_error_is_a_portability_value_error() -> None:
    assert issubclass(SigningError, PortabilityError)
    assert issubclass(SigningError, ValueError)


def test_error_does_not_echo_the_secret() -> None:
    secret = "whsec_sup3r-s3cret-value"

    with pytest.raises(SigningError) as raised:
        sign(secret, MSG_ID, 1_700_000_000, BODY)

    assert "sup3r" not in str(raised.value)


def test_no_secret_at_all_is_refused() -> None:
    with pytest.raises(SigningError, match="at least one"):
        webhook_headers([], MSG_ID, BODY)
