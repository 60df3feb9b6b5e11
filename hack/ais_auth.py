#!/usr/bin/env python3
"""AIS AuthN administration for the local cluster (hack/cluster.sh with AIS_AUTH=1) and the e2e tests.

Standard library only (it runs before the project's venv exists). Talks to the AuthN server's REST API and to
the AIS proxy, always with the AuthN admin's token (its password is read from a file, never a command line):

  setup --token-file F          register the AIS cluster with AuthN (once) and give the operator its own AIS
                                identity: user `sdo-operator` with the cluster-owner role of that cluster (AIS
                                allows dSort to cluster admins only); its token is written to F (mode 0600)
  tenant NAME --bucket B ...    create the buckets (if missing), a role with read-write rights on exactly
    [--read-only R ...]         those buckets (read-only on R), a user NAME with that role; print its token
                                (`aws://NAME`: a remote bucket, which must exist in its store)
  revoke --token-file F         revoke a token (AuthN tells the cluster)

A tenant's role grants `rw` on its buckets (GET, HEAD, PUT, APPEND, DELETE and MOVE of objects, HEAD and LIST of
the bucket) and nothing on the cluster: no bucket creation, no cluster map, no dSort.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CLUSTER_ALIAS = "sdo"
OPERATOR_USER = "sdo-operator"
ACCESS_RW = 831  # AIS apc.AccessRW: GET|ObjHEAD|PUT|APPEND|ObjDELETE|ObjMOVE|BckHEAD|ObjLIST
ACCESS_RO = 771  # AIS apc.AccessRO: GET|ObjHEAD|BckHEAD|ObjLIST
HOUR_NS = 3600 * 10**9


class Http:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base, self.token = base.rstrip("/"), token

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return None
            raise SystemExit(f"{method} {self.base}{path}: HTTP {e.code}: {e.read().decode()[:300]}") from e
        return json.loads(text) if text.strip() else None


def login(authn: str, user: str, password: str, expires_ns: int | None = None) -> str:
    """A token of `user`; `expires_ns` None: AuthN's default lifetime (24 h here), 0: its maximum (90 days)."""
    body = Http(authn).call("POST", f"/v1/users/{user}", {"password": password, "expires_in": expires_ns})
    return str(body["token"])


def admin(args: argparse.Namespace) -> tuple[Http, Http]:
    """(AuthN, AIS) as the AuthN admin."""
    token = login(args.authn, "admin", Path(args.admin_pass_file).read_text().strip())
    return Http(args.authn, token), Http(args.ais, token)


def cluster_uuid(ais: Http) -> str:
    return str(ais.call("GET", "/v1/daemon?what=smap")["uuid"])


def write_secret(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def setup(args: argparse.Namespace) -> None:
    authn, ais = admin(args)
    uuid = cluster_uuid(ais)
    registered = authn.call("GET", "/v1/clusters") or {}
    if uuid not in json.dumps(registered):
        authn.call("POST", "/v1/clusters", {"id": uuid, "alias": CLUSTER_ALIAS, "urls": [args.ais]})
    password = secrets.token_hex(16)
    role = f"ClusterOwner-{CLUSTER_ALIAS}"  # made by AuthN when the cluster was registered
    if authn.call("GET", f"/v1/users/{OPERATOR_USER}", ok=(404,)) is None:
        authn.call("POST", "/v1/users", {"id": OPERATOR_USER, "pass": password, "roles": [{"name": role}]})
    else:
        authn.call("PUT", f"/v1/users/{OPERATOR_USER}", {"id": OPERATOR_USER, "pass": password,
                                                         "roles": [{"name": role}]})  # fmt: skip
    write_secret(args.token_file, login(args.authn, OPERATOR_USER, password, 0))
    print(f"cluster {uuid} registered as {CLUSTER_ALIAS}; operator identity {OPERATOR_USER} -> {args.token_file}")


def tenant_token(
    args: argparse.Namespace,
    name: str,
    buckets: list[str],
    expires_ns: int | None = None,
    read_only: tuple[str, ...] = (),
) -> str:
    """Create (or reset) tenant `name` with rw on exactly `buckets` and ro on `read_only` (all created if
    missing); its token."""
    authn, ais = admin(args)
    uuid = cluster_uuid(ais)
    for b in [*buckets, *read_only]:
        if "://" not in b and ais.call("HEAD", f"/v1/buckets/{b}", ok=(404,)) is None:
            ais.call("POST", f"/v1/buckets/{b}", {"action": "create-bck"}, ok=(409,))

    def bck(b: str) -> dict[str, Any]:
        """`name` (an AIS bucket) or `aws://name` (a remote bucket: it must exist in its store)."""
        provider, _, bucket = b.rpartition("://")
        return {"name": bucket, "provider": provider or "ais", "namespace": {"uuid": uuid, "name": ""}}

    role = {
        "name": f"tenant-{name}",
        "desc": f"read-write on {', '.join(buckets)}",
        "buckets": [
            {"bck": bck(b), "perm": str(perm)}
            for b, perm in [*((b, ACCESS_RW) for b in buckets), *((b, ACCESS_RO) for b in read_only)]
        ],
    }
    if authn.call("GET", f"/v1/roles/{role['name']}", ok=(404,)) is None:
        authn.call("POST", "/v1/roles", role)
    else:
        authn.call("PUT", f"/v1/roles/{role['name']}", role)
    password = secrets.token_hex(16)
    user = {"id": name, "pass": password, "roles": [{"name": role["name"]}]}
    if authn.call("GET", f"/v1/users/{name}", ok=(404,)) is None:
        authn.call("POST", "/v1/users", user)
    else:
        authn.call("PUT", f"/v1/users/{name}", user)
    return login(args.authn, name, password, expires_ns)


def revoke(authn: str, token: str) -> None:
    Http(authn).call("DELETE", "/v1/tokens", {"token": token})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authn", default=os.environ.get("AIS_AUTHN_URL", ""), help="AuthN server URL")
    ap.add_argument("--ais", default=os.environ.get("AIS_AUTH_ENDPOINT", ""), help="AIS proxy URL")
    ap.add_argument("--admin-pass-file", default=os.environ.get("AIS_AUTHN_ADMIN_PASS_FILE", ""))
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--token-file", required=True)
    t = sub.add_parser("tenant")
    t.add_argument("name")
    t.add_argument("--bucket", action="append", required=True, help="a bucket it may read and write")
    t.add_argument("--read-only", action="append", default=[], help="a bucket it may only read")
    t.add_argument("--hours", type=float, default=24.0, help="token lifetime")
    r = sub.add_parser("revoke")
    r.add_argument("--token-file", required=True)
    args = ap.parse_args(argv)
    if not (args.authn and args.ais and args.admin_pass_file):
        ap.error('--authn, --ais and --admin-pass-file (or eval "$(hack/cluster.sh env)" with AIS_AUTH=1)')
    if args.command == "setup":
        setup(args)
    elif args.command == "tenant":
        print(tenant_token(args, args.name, args.bucket, int(args.hours * HOUR_NS), tuple(args.read_only)))
    else:
        revoke(args.authn, Path(args.token_file).read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
