"""Knowledge bases per department: which collections a principal reads and manages.

Collections are configured, not created in the app (``settings.collections``: an id,
a name, reader groups, manager groups; roles/app's ``app_collections``): hospital IT
owns the directory groups that decide access, so the mapping sits in the inventory
beside ``ldap_role_groups``. Every document belongs to one collection
(``documents.collection``); its chunks carry the same one, so retrieval keeps to the
readable collections without a join.

- An admin (the role) is a hospital-wide knowledge-base admin: manages and reads every
  collection, configured or not. Auditors and break-glass read every one (they review).
- Anyone else reads a collection whose ``readers`` hold one of their groups, or ``"*"``
  (everyone signed in), and manages one whose ``managers`` hold one of their groups;
  managing implies reading. A collection manager needs no admin role: the directory
  group is the grant, and it reaches that collection's documents only.
- A document in a collection the settings no longer name is read and managed by
  admins only, until it is moved back into one (by editing the settings).

Groups are compared as normalised DNs (app/auth/ldap.py ``normalise_dn``). A user's
groups are read at sign-in and by the directory sync (app/auth/lifecycle.py, which ends
the sessions of a user whose groups changed), so a change of settings applies at once
and a change in the directory at the next sync.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.ldap import normalise_dn
from app.auth.principal import Principal
from app.kb.parse import UploadRefused
from app.models import Role
from app.settings import EVERYONE, Settings


class CollectionRefused(UploadRefused):
    status_code = 422
    code = "collection"


@dataclass(frozen=True)
class Access:
    """The collections a principal reads and manages; None: every one."""

    read: frozenset[str] | None
    manage: frozenset[str] | None

    def reads(self, collection: str) -> bool:
        return self.read is None or collection in self.read

    def manages(self, collection: str) -> bool:
        return self.manage is None or collection in self.manage

    @property
    def manages_any(self) -> bool:
        return self.manage is None or bool(self.manage)


def _granted(members: list[str], groups: frozenset[str], everyone: bool) -> bool:
    return any(
        (everyone and member == EVERYONE) or normalise_dn(member) in groups for member in members
    )


def access_for(settings: Settings, principal: Principal) -> Access:
    if principal.has(Role.admin):
        return Access(read=None, manage=None)
    groups = frozenset(normalise_dn(group) for group in principal.groups)
    manage = frozenset(
        slug
        for slug, spec in settings.collections.items()
        if _granted(spec.managers, groups, everyone=False)
    )
    if principal.has(Role.auditor) or principal.break_glass:
        return Access(read=None, manage=manage)
    read = manage | frozenset(
        slug
        for slug, spec in settings.collections.items()
        if _granted(spec.readers, groups, everyone=True)
    )
    return Access(read=read, manage=manage)


def name_of(settings: Settings, collection: str) -> str:
    """The collection's display name; its id if the settings no longer name it."""
    spec = settings.collections.get(collection)
    return spec.name if spec is not None else collection


def collection_groups(settings: Settings) -> frozenset[str]:
    """Every group that lets its members read or manage a collection."""
    named: list[str] = []
    for spec in settings.collections.values():
        named += spec.readers + spec.managers
    return frozenset(normalise_dn(group) for group in named if group != EVERYONE)


def upload_collection(settings: Settings, access: Access, requested: str | None) -> str:
    """The collection a new document goes to: the one named, which the uploader must
    manage; else the default collection for a hospital-wide admin, or the only one a
    collection manager manages. Raises CollectionRefused."""
    if requested:
        if requested not in settings.collections:
            raise CollectionRefused(f"there is no collection {requested!r}")
        if not access.manages(requested):
            raise CollectionRefused(f"you do not manage the collection {requested!r}")
        return requested
    if access.manage is None:
        return settings.default_collection
    if len(access.manage) == 1:
        return next(iter(access.manage))
    raise CollectionRefused("name the collection the document belongs to")
