"""The privacy policy as data: what each category's record may carry, and the audience rules.

A policy is declarative (a YAML file, see ``policies/privacy-policy.yaml``) and versioned. It
classifies every field of every category's record (``schemas/account_change.avsc``):

* ``keep``: the subject's own data; delivered.
* ``drop``: never delivered; the field carries a blank instead (its schema default, else null
  for a nullable field, else "" for a string), so the record keeps the shape the webhook
  contract describes. A field with no blank (an enum or a timestamp without a default) cannot
  be dropped.
* ``other_users.keep``: another person's identifier that the subject already sees in the app
  (whom they follow, whom they message); delivered.
* ``other_users.remove``: another person's identifier the subject does not see; blanked like
  a dropped field.

A field the policy does not name is an error when the policy is loaded (a schema change must
come with a decision), and is never delivered if one slips through (fail closed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from portability.privacy.errors import PolicyError
from portability.wire.records import CATEGORIES
from portability.wire.schemas import SchemaName, schema_text

__all__ = [
    "FIGURE_KINDS",
    "NO_BLANK",
    "AudienceRule",
    "CategoryRule",
    "PrivacyPolicy",
    "policy_from_document",
    "record_fields",
]

# The activity kinds whose counts a PostAudience record can carry (as <kind>_count).
FIGURE_KINDS: Final = ("share", "view")
_VERSION: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")
_RESERVED_VERSION: Final = "unversioned"  # what deliveries from before versions say
_TOP_KEYS: Final = frozenset({"version", "description", "categories", "audience"})
_CATEGORY_KEYS: Final = frozenset({"keep", "drop", "other_users"})
_OTHER_USER_KEYS: Final = frozenset({"keep", "remove"})
_AUDIENCE_KEYS: Final = frozenset(
    {"kinds", "min_group_size", "count_private_accounts", "count_hidden_shares"}
)
_RECORD_CATEGORY: Final = {
    "Profile": "profile",
    "Post": "post",
    "Follow": "follow",
    "Activity": "activity",
    "DirectMessage": "direct_message",
}
_RECORD_NAME: Final = {category: name for name, category in _RECORD_CATEGORY.items()}
# What record_fields() gives for a field that cannot be blanked (dropped or removed).
NO_BLANK: Final = object()


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """What a recipient receives of one category's record.

    Attributes:
        record_type: The record's full Avro name (its branch of the ``record`` union).
        delivered: The fields delivered as they are (kept and visible other-user fields), in
            schema order.
        blanked: Dropped and removed fields, each with the default it is replaced by.
    """

    category: str
    record_type: str
    keep: frozenset[str]
    drop: frozenset[str]
    other_users_keep: frozenset[str]
    other_users_remove: frozenset[str]
    delivered: tuple[str, ...]
    blanked: Mapping[str, Any]

    def shape(self, record: Mapping[str, Any], tagged: bool = False) -> dict[str, Any]:
        """A new record with only what the policy lets through (the input is not modified).

        ``tagged`` adds fastavro's union hint (``-type``), saving the matcher a second copy.
        """
        shaped = {name: record[name] for name in self.delivered if name in record}
        if tagged:
            shaped["-type"] = self.record_type
        if self.blanked:
            shaped.update(self.blanked)
        return shaped


@dataclass(frozen=True, slots=True)
class AudienceRule:
    """How activity on a creator's post reaches the creator: only as counts.

    Attributes:
        kinds: Activity kinds counted toward a post's figures (``share_count``, ``view_count``).
        min_group_size: A figure is released only while at least this many count toward it.
        count_private_accounts: Whether private accounts' activity counts (it never shows).
        count_hidden_shares: Whether shares of users who hide their shares count.
    """

    kinds: frozenset[str]
    min_group_size: int
    count_private_accounts: bool
    count_hidden_shares: bool

    def release(self, count: int) -> int | None:
        """The figure that may be shown for ``count``: itself, or None below the minimum."""
        return count if count >= self.min_group_size else None


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    """One version of the privacy rules; immutable, so a batch sees one version throughout."""

    version: str
    description: str
    categories: Mapping[str, CategoryRule]
    audience: AudienceRule

    def rule(self, category: str) -> CategoryRule | None:
        """The rule of ``category``; None for a category this policy does not know."""
        return self.categories.get(category)

    def shape(self, category: str, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """``record`` as the policy lets it through; None for an unknown category."""
        rule = self.categories.get(category)
        return None if rule is None else rule.shape(record)


def policy_from_document(document: object, source: Path | None = None) -> PrivacyPolicy:
    """Validate a parsed policy document and build the policy.

    Raises:
        PolicyError: What is wrong and where, e.g. a field of the schema the policy does not
            classify, or a dropped field that has no default.
    """
    top = _mapping(document, "the document", source)
    _known_keys(top, _TOP_KEYS, "the document", source)
    version = top.get("version")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise PolicyError(
            f"version must be a string of letters, digits and . _ : + - (at most 64), "
            f"got {version!r}",
            source,
        )
    if version == _RESERVED_VERSION:
        raise PolicyError(f"version {version!r} is reserved for unversioned deliveries", source)
    description = top.get("description", "")
    if not isinstance(description, str):
        raise PolicyError("description must be a string", source)
    categories = _mapping(top.get("categories"), "categories", source)
    missing = [c for c in CATEGORIES if c not in categories]
    unknown = sorted(set(categories) - set(CATEGORIES))
    if missing or unknown:
        raise PolicyError(
            f"categories must name exactly {', '.join(CATEGORIES)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else ""),
            source,
        )
    rules: dict[str, CategoryRule] = {
        c: _category_rule(c, categories[c], source) for c in CATEGORIES
    }
    return PrivacyPolicy(
        version=version,
        description=description,
        categories=MappingProxyType(rules),
        audience=_audience_rule(top.get("audience"), source),
    )


def _category_rule(category: str, document: object, source: Path | None) -> CategoryRule:
    where = f"categories.{category}"
    body = _mapping(document, where, source)
    _known_keys(body, _CATEGORY_KEYS, where, source)
    others = _mapping(body.get("other_users", {}), f"{where}.other_users", source)
    _known_keys(others, _OTHER_USER_KEYS, f"{where}.other_users", source)
    groups = {
        "keep": _names(body.get("keep", []), f"{where}.keep", source),
        "drop": _names(body.get("drop", []), f"{where}.drop", source),
        "other_users.keep": _names(others.get("keep", []), f"{where}.other_users.keep", source),
        "other_users.remove": _names(
            others.get("remove", []), f"{where}.other_users.remove", source
        ),
    }
    fields = record_fields()[category]
    _classified_once(where, groups, fields, source)
    blanked: dict[str, Any] = {}
    for name in (*groups["drop"], *groups["other_users.remove"]):
        blank = fields[name]
        if blank is NO_BLANK:
            raise PolicyError(
                f"{where}: field {name!r} has no default in schemas/account_change.avsc and is "
                "neither nullable nor a string, so it cannot be dropped or removed (the record "
                "would not encode); give it a default in the schema first, or keep it",
                source,
            )
        blanked[name] = blank
    delivered = tuple(
        name for name in fields if name in groups["keep"] or name in groups["other_users.keep"]
    )
    return CategoryRule(
        category=category,
        record_type=f"portability.v1.{_RECORD_NAME[category]}",
        keep=groups["keep"],
        drop=groups["drop"],
        other_users_keep=groups["other_users.keep"],
        other_users_remove=groups["other_users.remove"],
        delivered=delivered,
        blanked=MappingProxyType(blanked),
    )


def _classified_once(
    where: str, groups: dict[str, frozenset[str]], fields: Mapping[str, Any], source: Path | None
) -> None:
    """Every field of the schema's record is in exactly one group, and nothing else is."""
    seen: dict[str, str] = {}
    for group, names in groups.items():
        for name in sorted(names):
            if name not in fields:
                raise PolicyError(
                    f"{where}.{group} names {name!r}, which is not a field of the "
                    f"{where.split('.')[-1]} record (fields: {', '.join(fields)})",
                    source,
                )
            if name in seen:
                raise PolicyError(
                    f"{where}: field {name!r} is in both {seen[name]} and {group}", source
                )
            seen[name] = group
    unclassified = [name for name in fields if name not in seen]
    if unclassified:
        raise PolicyError(
            f"{where} does not classify {', '.join(unclassified)}: put each under keep, drop, "
            "other_users.keep or other_users.remove",
            source,
        )


def _audience_rule(document: object, source: Path | None) -> AudienceRule:
    body = _mapping(document, "audience", source)
    _known_keys(body, _AUDIENCE_KEYS, "audience", source)
    kinds = _names(body.get("kinds", []), "audience.kinds", source)
    unknown = sorted(kinds - set(FIGURE_KINDS))
    if unknown:
        raise PolicyError(
            f"audience.kinds: {', '.join(unknown)} cannot be counted; "
            f"figures exist for {', '.join(FIGURE_KINDS)}",
            source,
        )
    size = body.get("min_group_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise PolicyError(f"audience.min_group_size must be an integer >= 1, got {size!r}", source)
    flags = {}
    for name in ("count_private_accounts", "count_hidden_shares"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            raise PolicyError(f"audience.{name} must be true or false, got {value!r}", source)
        flags[name] = value
    return AudienceRule(kinds=kinds, min_group_size=size, **flags)


def _mapping(value: object, where: str, source: Path | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} must be a mapping, got {type(value).__name__}", source)
    return value


def _names(value: object, where: str, source: Path | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f"{where} must be a list of field names, got {value!r}", source)
    return frozenset(value)


def _known_keys(
    body: Mapping[str, Any], known: frozenset[str], where: str, source: Path | None
) -> None:
    unknown = sorted(str(key) for key in body if key not in known)
    if unknown:
        raise PolicyError(
            f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            source,
        )


@cache
def record_fields() -> Mapping[str, Mapping[str, Any]]:
    """Per category, the record's fields in schema order, each with the blank that replaces it
    when dropped: its default, else null for a nullable field, else "" for a string (or none)."""
    schema = json.loads(schema_text(SchemaName.ACCOUNT_CHANGE))
    union = next(f["type"] for f in schema["fields"] if f["name"] == "record")
    fields: dict[str, Mapping[str, Any]] = {}
    for branch in union:
        if not isinstance(branch, dict):
            continue
        category = _RECORD_CATEGORY.get(str(branch.get("name", "")).rsplit(".", 1)[-1])
        if category is not None:
            fields[category] = MappingProxyType({f["name"]: _blank(f) for f in branch["fields"]})
    return MappingProxyType(fields)


def _blank(field: Mapping[str, Any]) -> Any:
    if "default" in field:
        return field["default"]
    kind = field["type"]
    if isinstance(kind, list) and "null" in kind:
        return None
    if kind == "string":
        return ""
    return NO_BLANK
