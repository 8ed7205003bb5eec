"""The response check the whole suite runs on the sandbox's answers (tests/contract.py) catches what it must."""

from __future__ import annotations

from tests.contract import violations, xml_violations

FIC = {
    "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i/"
    "federatedIdentityCredentials/f",
    "name": "f",
    "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
    "properties": {
        "issuer": "https://issuer/",
        "subject": "system:serviceaccount:a:b",
        "audiences": ["api://AzureADTokenExchange"],
    },
}
EXTENSION = {
    "id": "x",
    "name": "azureml",
    "properties": {
        "extensionType": "Microsoft.AzureML.Kubernetes",
        "provisioningState": "Succeeded",
        "errorInfo": None,
        "statuses": [],
    },
}


def test_a_body_like_azures_passes():
    assert violations("msi.fic", 200, FIC) == []
    assert violations("ext.extension", 200, EXTENSION) == []


def test_a_property_the_model_lacks_is_named_with_its_route():
    body = {**FIC, "properties": {**FIC["properties"], "issuerUrl": "https://issuer/"}}
    assert violations("msi.fic", 200, body) == ["msi.fic.properties: property 'issuerUrl' is not in the model"]
    nested = {**EXTENSION, "properties": {**EXTENSION["properties"], "training": True}}
    assert violations("ext.extension", 200, nested) == [
        "ext.extension.properties: property 'training' is not in ExtensionProperties"
    ]


def test_an_enum_value_the_model_does_not_know_is_named():
    body = {**EXTENSION, "properties": {**EXTENSION["properties"], "provisioningState": "Installing"}}
    (found,) = violations("ext.extension", 200, body)
    assert "'Installing' is not a value of ProvisioningState" in found


def test_a_missing_required_property_is_named():
    page = {"value": [{"name": "j", "properties": {"jobType": "Command"}}]}
    found = violations("ml.job.list", 200, page)
    assert any("required property 'command' of CommandJob is missing" in v for v in found), found
    assert any("required property 'environmentId'" in v for v in found), found


def test_the_discriminator_picks_the_subtype():
    compute = {"properties": {"computeType": "Kubernetes", "properties": {"namespace": "ns", "bogus": 1}}}
    assert violations("ml.compute", 200, compute) == [
        "ml.compute.properties.properties: property 'bogus' is not in KubernetesProperties"
    ]


def test_errors_have_arms_shape():
    assert violations("msi.fic", 404, {"error": {"code": "NotFound", "message": "gone"}}) == []
    assert violations("msi.fic", 400, {"message": "bad"})


def test_an_operation_status_body_fits_arms_common_type():
    good = {"id": "x/operationStatuses/1", "name": "1", "status": "Creating", "startTime": "2026-01-01T00:00:00Z"}
    assert violations("arm.operation", 200, good) == []
    assert violations("arm.operation", 200, {**good, "progress": 5}) == [
        "arm.operation: progress is not in OperationStatusResult"
    ]
    assert violations("arm.operation", 200, {"status": "Succeeded"}) == ["arm.operation: Azure always sends startTime"]


def test_fields_azure_always_sends_are_required_of_the_sandbox():
    extension = {**EXTENSION, "properties": {"provisioningState": "Succeeded", "statuses": []}}
    assert violations("ext.extension", 200, extension) == ["ext.extension: Azure always sends properties.errorInfo"]


LISTING = (
    b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://a.blob.x/" '
    b'ContainerName="c"><Prefix>p/</Prefix><Blobs><Blob><Name>p/x</Name><Properties><Content-Length>1'
    b"</Content-Length></Properties></Blob>%s</Blobs><NextMarker /></EnumerationResults>"
)


def test_blob_xml_is_checked_against_the_storage_sdks_models():
    assert xml_violations("storage.blob", 200, LISTING % b"") == []
    assert xml_violations("storage.blob", 200, LISTING % b"<Folder />") == [
        "storage.blob.Blobs: <Folder> is not in BlobFlatListSegment"
    ]
    assert (
        xml_violations("storage.blob", 404, b"<Error><Code>ContainerNotFound</Code><Message>m</Message></Error>") == []
    )
    assert xml_violations("storage.blob", 404, b"<Fault />") != []
