#!/usr/bin/env python3
"""Checks on one rendered overlay (`kubectl kustomize` output) that kubernetes-validate
cannot do, for deploy/check.sh.

  rendered.py crds RENDERED.yaml
      Validate every custom resource the overlays use against the strict subset schema in
      this folder (PodMonitor). deploy/check.sh fails on any other kind kubernetes-validate
      has no schema for, so a new CRD needs a schema here (or an explicit skip there).

  rendered.py config RENDERED.yaml OUTDIR
      Write the authgate container's gateway.toml (from the ConfigMap it mounts) to
      OUTDIR/gateway.toml and its AUTHGATE_* environment to OUTDIR/env (NAME=VALUE lines),
      with the Secret's mount path /var/run/secrets/authgate/ replaced by OUTDIR/secrets/,
      where a placeholder is written for every key the configuration names. Then
      `authgate check` can judge exactly what the pod would load.

Needs PyYAML and jsonschema (both come with kubernetes-validate).
"""

import base64
import json
import os
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET_DIR = "/var/run/secrets/authgate/"
# The custom resources deploy/kubernetes renders, and the schema each is checked against.
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.schema.json"}
# Placeholder contents per Secret key (valid for `authgate check`, worthless as secrets).
PLACEHOLDERS = {
    "client-secret": "ci-placeholder-client-secret",
    "cookie-secrets": base64.b64encode(b"\x01" * 32).decode() + "\n",
    "redis-url": "redis://127.0.0.1:6379/0",
}


def load(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def crds(path):
    failed = False
    label = os.path.basename(path)
    for doc in load(path):
        key = (doc.get("apiVersion"), doc.get("kind"))
        schema_file = CRD_SCHEMAS.get(key)
        if schema_file is None:
            continue
        with open(os.path.join(HERE, schema_file), encoding="utf-8") as f:
            schema = json.load(f)
        name = f"{doc['kind']}/{doc.get('metadata', {}).get('name')}"
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
        for e in errors:
            where = ".".join(str(p) for p in e.absolute_path) or "(root)"
            print(f"ERROR {label}: {name}: {where}: {e.message}")
        if errors:
            failed = True
        else:
            print(f"ok    {label}: {name} against {schema_file} (strict subset of the CRD)")
    return 1 if failed else 0


def config(path, outdir):
    docs = load(path)
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if len(deployments) != 1:
        sys.exit(f"{path}: expected one Deployment, found {len(deployments)}")
    pod = deployments[0]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "authgate")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/authgate")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap_name = volume["configMap"]["name"]
    configmap = next(
        d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == configmap_name
    )
    secrets = os.path.join(outdir, "secrets") + "/"
    os.makedirs(secrets, exist_ok=True)
    toml = configmap["data"]["gateway.toml"].replace(SECRET_DIR, secrets)
    env = [
        (e["name"], e["value"].replace(SECRET_DIR, secrets))
        for e in container.get("env", [])
        if e["name"].startswith("AUTHGATE_") and "value" in e
    ]
    with open(os.path.join(outdir, "gateway.toml"), "w", encoding="utf-8") as f:
        f.write(toml)
    with open(os.path.join(outdir, "env"), "w", encoding="utf-8") as f:
        f.writelines(f"{name}={value}\n" for name, value in env)
    for key, contents in PLACEHOLDERS.items():
        with open(os.path.join(secrets, key), "w", encoding="utf-8") as f:
            f.write(contents)
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "crds":
        return crds(argv[2])
    if len(argv) == 4 and argv[1] == "config":
        return config(argv[2], argv[3])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
