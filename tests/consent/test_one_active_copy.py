"""Never two active copies of a consent (same user, app, mode and categories).

On SQLite and PostgreSQL: a second identical grant is refused naming the active one; what
differs (mode, categories) or follows a revocation is granted; the database's unique index
refuses a copy even when the service's check is skipped; and grants racing from many
threads leave exactly one active consent, every loser told which one.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.engine import Engine

from portability.consent import AppView, ConsentService, ConsentView
from portability.consent.errors import DuplicateConsentError

RACERS = 8


def test_an_identical_grant_is_refused_naming_the_active_consent(
    service: ConsentService, app: AppView
) -> None:
    first = service.grant("u1", app.app_id, ["post", "profile"])

    with pytest.raises(DuplicateConsentError) as refused:
        # The same set, in another order and with a repeat: the same consent.
        service.grant("u1", app.app_id, ["profile", "post", "post"])

    assert refused.value.consent_id == first.consent_id
    message = str(refused.value)
    assert first.consent_id in message
    assert "revoke it first" in message
    assert [c.consent_id for c in service.list_consents(user_id="u1")] == [first.consent_id]


def test_what_differs_or_follows_a_revocation_is_granted(
    service: ConsentService, app: AppView
) -> None:
    first = service.grant("u1", app.app_id, ["post"])
    granted = [
        service.grant("u1", app.app_id, ["post"], mode="one_time"),
        service.grant("u1", app.app_id, ["post", "profile"]),
        service.grant("u2", app.app_id, ["post"]),
    ]
    service.revoke(first.consent_id)
    again = service.grant("u1", app.app_id, ["post"])

    assert again.consent_id != first.consent_id
    active = service.list_consents(status="active")
    assert {c.consent_id for c in active} == {again.consent_id, *(g.consent_id for g in granted)}


def test_the_database_refuses_a_copy_the_check_did_not_see(
    service: ConsentService, app: AppView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when two grants pass the check together: the unique index decides, named the same."""
    first = service.grant("u1", app.app_id, ["post"])
    monkeypatch.setattr(
        "portability.consent.consents.refuse_active_copy", lambda _session, _consent: None
    )

    with pytest.raises(DuplicateConsentError) as refused:
        service.grant("u1", app.app_id, ["post"])

    assert refused.value.consent_id == first.consent_id
    assert len(service.list_consents(user_id="u1")) == 1


def test_racing_grants_leave_one_active_consent(engine: Engine, app: AppView) -> None:
    start = threading.Barrier(RACERS)

    def grant() -> ConsentView | DuplicateConsentError:
        service = ConsentService(engine)
        start.wait(timeout=30)
        try:
            return service.grant("u-race", app.app_id, ["post"])
        except DuplicateConsentError as refused:
            return refused

    with ThreadPoolExecutor(RACERS) as pool:
        outcomes = [future.result(60) for future in [pool.submit(grant) for _ in range(RACERS)]]

    [winner] = [o for o in outcomes if isinstance(o, ConsentView)]
    refusals = [o for o in outcomes if isinstance(o, DuplicateConsentError)]
    assert len(refusals) == RACERS - 1
    assert {refused.consent_id for refused in refusals} == {winner.consent_id}
    active = ConsentService(engine).list_consents(user_id="u-race", status="active")
    assert [c.consent_id for c in active] == [winner.consent_id]
