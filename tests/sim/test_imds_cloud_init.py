"""What cloud-init's EC2 datasource reads besides the ENIs' keys (the request log of a
cloud-init guest, tests/system/test_cloud_init.py): user data and the instance identity
document, as EC2 serves them and consistent with the world."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest

from ec2sim.imds import ImdsServer
from ec2sim.imds_tree import identity_document
from ec2sim.world import World, default_world
from tests.sim.test_imds_conformance import assert_error_page, get, get_token

DOC = "/latest/dynamic/instance-identity/document"
# Every field AWS documents for the document, in its order.
DOC_FIELDS = [
    "accountId",
    "architecture",
    "availabilityZone",
    "billingProducts",
    "devpayProductCodes",
    "marketplaceProductCodes",
    "imageId",
    "instanceId",
    "instanceType",
    "kernelId",
    "pendingTime",
    "privateIp",
    "ramdiskId",
    "region",
    "version",
]


@pytest.fixture
def model() -> World:
    world = default_world()
    world.instance_id = "i-0fedcba9876543210"
    world.instance_type = "m6i.xlarge"
    world.region = "eu-west-1"
    world.availability_zone = "eu-west-1b"
    return world


@pytest.fixture
def srv(model: World) -> Iterator[ImdsServer]:
    server = ImdsServer.listen(model, "127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def token(srv: ImdsServer) -> str:
    return get_token(srv)


def test_no_user_data_is_404_and_unlisted(srv: ImdsServer, token: str) -> None:
    assert_error_page(get(srv, "/latest/user-data", token), 404)
    assert get(srv, "/latest/", token).text.split("\n") == ["dynamic", "meta-data"]


def test_user_data_served_as_given_and_listed(model: World, srv: ImdsServer, token: str) -> None:
    model.user_data = "#cloud-config\nwrite_files:\n- path: /run/x\n  content: ü\n"
    r = get(srv, "/2021-03-23/user-data", token)
    assert r.status == 200 and r.body == model.user_data.encode()
    assert get(srv, "/latest/", token).text.split("\n") == ["dynamic", "meta-data", "user-data"]
    assert get(srv, "/latest/user-data/", token).status == 404  # a leaf, not a directory


def test_user_data_needs_a_token(srv: ImdsServer, model: World) -> None:
    model.user_data = "#!/bin/sh\ntrue\n"
    assert get(srv, "/latest/user-data", None).status == 401


def test_identity_document_fields_and_world(model: World, srv: ImdsServer, token: str) -> None:
    r = get(srv, DOC, token)
    assert r.status == 200 and r.headers["content-type"] == "text/plain"
    doc = json.loads(r.text)
    assert list(doc) == DOC_FIELDS
    primary = model.primary()
    md = "/latest/meta-data"
    assert doc["instanceId"] == model.instance_id == get(srv, f"{md}/instance-id", token).text
    assert doc["instanceType"] == "m6i.xlarge"
    assert doc["region"] == "eu-west-1" and doc["availabilityZone"] == "eu-west-1b"
    assert doc["availabilityZone"].startswith(doc["region"])
    assert doc["privateIp"] == str(primary.ipv4s[0]) == get(srv, f"{md}/local-ipv4", token).text
    owner = get(srv, f"{md}/network/interfaces/macs/{primary.mac}/owner-id", token)
    assert doc["accountId"] == owner.text and len(doc["accountId"]) == 12
    assert doc["imageId"] == get(srv, f"{md}/ami-id", token).text
    assert doc["version"] == "2017-09-30" and doc["architecture"] == "x86_64"
    assert doc["pendingTime"].endswith("Z") and "T" in doc["pendingTime"]
    for key in ("billingProducts", "devpayProductCodes", "marketplaceProductCodes"):
        assert doc[key] is None
    assert doc["kernelId"] is None and doc["ramdiskId"] is None


def test_identity_document_format(srv: ImdsServer, token: str) -> None:
    # pretty-printed as EC2 does: two-space indent, `"key" : value`
    text = get(srv, DOC, token).text
    assert text.startswith('{\n  "accountId" : "123456789012",\n')
    assert '  "kernelId" : null,\n' in text and text.endswith("}")


def test_identity_document_ipv6_only_primary() -> None:
    world = default_world()
    primary = world.primary()
    primary.ipv4s = []
    primary.ipv6s = [ipaddress.IPv6Address("2600:1f16:292:1::10")]
    assert identity_document(world)["privateIp"] is None


def test_user_data_in_world_file_round_trip() -> None:
    world = default_world()
    world.user_data = "#cloud-config\n{}\n"
    again = World.from_json(json.loads(json.dumps(world.to_json())))
    assert again.user_data == world.user_data
    assert World.from_json(default_world().to_json()).user_data is None
