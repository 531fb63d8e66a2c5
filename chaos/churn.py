"""Consent churn through the consent API, as the platform and the apps call it.

Grants (with and without a snapshot), revocations by the platform and by the app, account
deletions, resyncs and signing-secret rotations, one call at a time, drawn from a seed. Each
call is one line of ``calls.jsonl``: what was asked, when it was sent, when it was answered
(``acked_at``: the moment the caller knows it took effect) and the answer. A call the API
cannot answer (it is restarting, or its store is down: 503 with Retry-After) is asked again
until answered, within a bound; a grant asked again after its answer was lost finds the
consent in force (409 ``consent_exists``) and takes that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from chaos.records import JsonLines

__all__ = ["ALL_CATEGORIES", "Churn", "ChurnApp"]

ALL_CATEGORIES = ("profile", "post", "follow", "activity", "direct_message")
_ANSWER_WITHIN_S = 240.0  # a call is asked again until answered, at most this long


@dataclass
class ChurnApp:
    """A registered, approved app: its name at the receiver, id, key and live secrets."""

    name: str
    app_id: str
    api_key: str
    secrets: list[str] = field(default_factory=list)


@dataclass
class _Consent:
    consent_id: str
    user_id: str
    app: ChurnApp


class Churn:
    """The platform's and the apps' calls to the consent API."""

    def __init__(
        self,
        api_url: str,
        tokens: tuple[str, str],
        receiver_url: str,
        secrets_file: Path,
        out: JsonLines,
        seed: int,
    ) -> None:
        self._api = api_url
        self._platform, self._operator = tokens
        self._receiver = receiver_url
        self._secrets_file = secrets_file
        self._out = out
        self._random = random.Random(seed)
        self.apps: list[ChurnApp] = []
        self._active: dict[str, _Consent] = {}
        self.deleted: set[str] = set()
        self.calls = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Churn:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self, method: str, path: str, token: str, body: Any = None, **headers: str
    ) -> tuple[int, Any, float, int]:
        """(status, JSON answer, when answered, attempts): asked again on no answer, 429, 5xx."""
        if self._session is None:
            raise RuntimeError("Churn is used with async with")
        deadline = time.monotonic() + _ANSWER_WITHIN_S
        attempts = 0
        while True:
            attempts += 1
            status, answer = 0, None
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with self._session.request(
                    method,
                    self._api + path,
                    json=body,
                    headers={"Authorization": f"Bearer {token}", **headers},
                ) as response:
                    status = response.status
                    with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                        answer = await response.json()
            if status and status < 500 and status != 429:
                return status, answer, time.time(), attempts
            if time.monotonic() > deadline:
                return status, answer, time.time(), attempts
            await asyncio.sleep(0.5)

    async def call(
        self, method: str, path: str, caller: str, body: Any = None
    ) -> tuple[int, Any, float, int]:
        """One call as ``caller`` (``platform``, ``operator``, or an app's key), asked again
        until answered: (status, JSON answer, when answered, attempts)."""
        token = {"platform": self._platform, "operator": self._operator}.get(caller, caller)
        return await self._call(method, path, token, body)

    def _record(
        self, op: str, sent_at: float, answer: tuple[int, Any, float, int], **what: Any
    ) -> None:
        status, body, acked_at, attempts = answer
        self.calls += 1
        self._out.write(
            {"op": op, "sent_at": sent_at, "acked_at": acked_at, "status": status}
            | {"attempts": attempts, "answer": body}
            | what
        )

    def _write_secrets(self) -> None:
        text = json.dumps({app.name: app.secrets for app in self.apps})
        partial = self._secrets_file.with_suffix(".tmp")
        partial.write_text(text)
        partial.replace(self._secrets_file)  # the receiver never reads half a file

    async def register(self, name: str) -> ChurnApp:
        """Register an app whose webhook is the receiver's ``/webhooks/NAME``, approve it."""
        sent_at = time.time()
        body = {
            "name": f"Chaos {name}",
            "use_case": "Keeps a copy of the user's data for the chaos suite.",
            "webhook_url": f"{self._receiver}/webhooks/{name}",
            "requested_scopes": list(ALL_CATEGORIES),
        }
        answer = await self._call("POST", "/v1/apps", self._operator, body)
        if answer[0] != 201:
            raise RuntimeError(f"registering app {name}: {answer[0]} {answer[1]}")
        registered = answer[1]
        app = ChurnApp(
            name,
            registered["app"]["app_id"],
            registered["api_key"],
            [registered["signing_secret"]],
        )
        self._record("register", sent_at, answer, app=name, app_id=app.app_id)
        review = await self._call(
            "POST", f"/v1/apps/{app.app_id}/review", self._operator, {"decision": "approve"}
        )
        if review[0] != 200:
            raise RuntimeError(f"approving app {name}: {review[0]} {review[1]}")
        self.apps.append(app)
        self._write_secrets()
        return app

    async def step(self, users: list[str]) -> None:
        """One call, drawn: mostly grants while few consents are active, then the rest."""
        draw = self._random.random()
        active = list(self._active.values())
        if draw < 0.5 or not active:
            await self.grant(users)
        elif draw < 0.72:
            await self.revoke(self._random.choice(active))
        elif draw < 0.84:
            await self.resync(self._random.choice(active))
        elif draw < 0.91:
            await self.delete_account(self._random.choice(active).user_id)
        else:
            await self.rotate(self._random.choice(self.apps))

    async def grant(self, users: list[str]) -> None:
        taken = {(c.user_id, c.app.name) for c in self._active.values()}
        free = [
            (user, app)
            for user in users
            if user not in self.deleted
            for app in self.apps
            if (user, app.name) not in taken
        ]
        if not free:
            return
        user, app = self._random.choice(free)
        categories: list[str] | str = (
            "all"
            if self._random.random() < 0.3
            else sorted(self._random.sample(ALL_CATEGORIES, self._random.randint(1, 3)))
        )
        snapshot = self._random.random() < 0.5
        body = {
            "user_id": user,
            "user_region": "DE",
            "app_id": app.app_id,
            "categories": categories,
            "mode": "ongoing",
            "initial_snapshot": snapshot,
        }
        sent_at = time.time()
        answer = await self._call("POST", "/v1/consents", self._platform, body)
        status, consent = answer[0], answer[1]
        if status == 409 and isinstance(consent, dict) and consent.get("error") == "consent_exists":
            # Our earlier attempt was stored before its answer was lost: that consent it is.
            found = await self._call(
                "GET",
                f"/v1/consents?user_id={user}&app_id={app.app_id}&status=active",
                self._platform,
            )
            listed = (found[1] or {}).get("consents", [])
            consent = listed[0] if listed else None
            answer = (201 if consent else status, consent, answer[2], answer[3])
        self._record(
            "grant",
            sent_at,
            answer,
            user_id=user,
            app=app.name,
            categories=categories,
            snapshot=snapshot,
        )
        if answer[0] == 201 and consent:
            cid = consent["consent_id"]
            self._active[cid] = _Consent(cid, user, app)

    async def revoke(self, consent: _Consent) -> None:
        by_app = self._random.random() < 0.5
        token = consent.app.api_key if by_app else self._platform
        sent_at = time.time()
        answer = await self._call("POST", f"/v1/consents/{consent.consent_id}/revoke", token)
        self._record(
            "revoke",
            sent_at,
            answer,
            consent_id=consent.consent_id,
            user_id=consent.user_id,
            app=consent.app.name,
            by="app" if by_app else "platform",
        )
        if answer[0] == 200:
            self._active.pop(consent.consent_id, None)

    async def resync(self, consent: _Consent) -> None:
        sent_at = time.time()
        path = f"/v1/consents/{consent.consent_id}/snapshots"
        answer = await self._call("POST", path, consent.app.api_key)
        self._record(
            "resync",
            sent_at,
            answer,
            consent_id=consent.consent_id,
            user_id=consent.user_id,
            app=consent.app.name,
        )

    async def delete_account(self, user: str) -> None:
        ended = [c for c in self._active.values() if c.user_id == user]
        sent_at = time.time()
        answer = await self._call("POST", f"/v1/users/{user}/account-deleted", self._platform)
        self._record(
            "delete_account",
            sent_at,
            answer,
            user_id=user,
            consents=[c.consent_id for c in ended],
        )
        if answer[0] == 200:
            self.deleted.add(user)
            for consent in ended:
                self._active.pop(consent.consent_id, None)

    async def rotate(self, app: ChurnApp) -> None:
        sent_at = time.time()
        key = uuid.uuid4().hex  # the same key on every attempt: a repeat rotates nothing
        answer = await self._call(
            "POST", f"/v1/apps/{app.app_id}/secret/rotate", app.api_key, **{"Idempotency-Key": key}
        )
        if answer[0] == 200:
            app.secrets = [answer[1]["signing_secret"], *app.secrets][:4]
            self._write_secrets()
        shown = {k: v for k, v in (answer[1] or {}).items() if k != "signing_secret"}
        self._record("rotate", sent_at, (answer[0], shown, answer[2], answer[3]), app=app.name)

    def active(self) -> dict[str, str]:
        """Active consents: id -> user."""
        return {cid: c.user_id for cid, c in self._active.items()}
