"""Role assignments at any scope (Microsoft.Authorization)."""

from __future__ import annotations

from aiohttp import web

from amlwire_sandbox import ids
from amlwire_sandbox.authorization import ROLES
from amlwire_sandbox.http import Call, json_response, paged
from amlwire_sandbox.router import route
from amlwire_sandbox.state import ArmError

RA = "/{scope*}/providers/Microsoft.Authorization/roleAssignments"
RD = "/{scope*}/providers/Microsoft.Authorization/roleDefinitions/{definition}"
ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"


def _scope(call: Call) -> str:
    return "/" + call.params["scope"].strip("/")


def _assignment_id(call: Call) -> str:
    return f"{_scope(call)}/providers/{ids.ROLE_ASSIGNMENT}/{call.params['assignment']}"


@route("GET", "authz.roleAssignment.list", RA, ASSIGNMENTS + "/read")
def list_role_assignments(call: Call) -> web.Response:
    found = call.cloud.list_role_assignments(_scope(call), call.query.get("$filter"))
    return json_response(paged(call, [r.body for r in found], call.state.timing.page_size))


@route("PUT", "authz.roleAssignment", RA + "/{assignment}", ASSIGNMENTS + "/write")
def put_role_assignment(call: Call) -> web.Response:
    resource, status = call.cloud.put_role_assignment(_scope(call), call.params["assignment"], call.json())
    return json_response(resource.body, status=status)


@route("GET", "authz.roleAssignment", RA + "/{assignment}", ASSIGNMENTS + "/read")
def get_role_assignment(call: Call) -> web.Response:
    found = call.state.get(_assignment_id(call))
    if found is None:
        assignment = call.params["assignment"]
        raise ArmError(404, "RoleAssignmentNotFound", f"The role assignment '{assignment}' is not found.")
    return json_response(found.body)


@route("DELETE", "authz.roleAssignment", RA + "/{assignment}", ASSIGNMENTS + "/delete")
def delete_role_assignment(call: Call) -> web.Response:
    removed = call.cloud.revoke_role_assignment(_assignment_id(call))
    return json_response(removed.body) if removed else web.Response(status=204)


@route("GET", "authz.roleDefinition", RD, "Microsoft.Authorization/roleDefinitions/read")
def get_role_definition(call: Call) -> web.Response:
    guid = call.params["definition"].lower()
    role = ROLES.get(guid)
    if role is None:  # rule: authz.role-definitions
        raise ArmError(
            404, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{guid}' does not exist."
        )
    return json_response(
        {
            "id": f"{_scope(call)}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
            "name": guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": role.name,
                "type": "BuiltInRole",
                "permissions": [
                    {
                        "actions": list(role.actions),
                        "notActions": list(role.not_actions),
                        "dataActions": list(role.data_actions),
                        "notDataActions": [],
                    }
                ],
                "assignableScopes": ["/"],
            },
        }
    )
