"""Who a role assignment applies to, and where: management groups above subscriptions, Entra groups around
principals (rule authz.inheritance).

Learn (Understand scope for Azure RBAC; Assign roles to groups): a role assigned at a management group applies
to every subscription under it and under its child groups, one at the tenant root ("/") to all; one assigned to a
group applies to its members, and to members of groups nested in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amlwire_sandbox import ids
from amlwire_sandbox.world import World


@dataclass
class Directory:
    subscriptions_of: dict[str, set[str]] = field(default_factory=dict)  # management group -> subscriptions
    members_of: dict[str, set[str]] = field(default_factory=dict)  # group -> direct members

    @classmethod
    def of(cls, world: World) -> Directory:
        parent = {g.name.lower(): (g.parent or "").lower() for g in world.management_groups}
        under: dict[str, set[str]] = {g.name.lower(): set() for g in world.management_groups}
        for group in world.management_groups:
            subscriptions = {s.lower() for s in group.subscriptions}
            at: str | None = group.name.lower()
            while at:  # a subscription is under its group and every group above it
                under.setdefault(at, set()).update(subscriptions)
                at = parent.get(at) or None
        return cls(under, {g.id: set(g.members) for g in world.groups})

    def covers(self, scope: str, resource: str) -> bool:
        """Whether an assignment at `scope` applies to `resource`."""
        scope_key = scope.rstrip("/").lower()
        if scope_key == "":
            return True  # the tenant root
        if scope_key.startswith(ids.MANAGEMENT_GROUP):
            group = scope_key.removeprefix(ids.MANAGEMENT_GROUP).split("/", 1)[0]
            parts = resource.strip("/").split("/")
            return len(parts) >= 2 and parts[1].lower() in self.subscriptions_of.get(group, set())
        return ids.is_within(resource, scope)

    def applies_to(self, assignee: str, principal: str) -> bool:
        """Whether an assignment to `assignee` applies to `principal` (itself, or a group it is in)."""
        return assignee == principal or assignee in self.groups_of(principal)

    def groups_of(self, principal: str) -> set[str]:
        found: set[str] = set()
        frontier = {principal}
        while frontier:
            frontier = {g for g, members in self.members_of.items() if members & frontier} - found
            found |= frontier
        return found
