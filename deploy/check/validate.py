#!/usr/bin/env python3
"""Validates every manifest under deploy/k8s, offline.

- Core objects (Deployment, Service, ConfigMap, Secret, PodDisruptionBudget) against
  the Kubernetes JSON schemas shipped by kubernetes-validate, strict (unknown fields are
  errors), for Kubernetes 1.29 (the first with native sidecars on by default) and for
  the newest release the package knows.
- ServiceMonitor / PodMonitor (prometheus-operator CRDs, in no core schema) against
  deploy/check/schemas/monitor.json.
- The rules the issue asks for, which no schema expresses: pgweir is a native sidecar
  (an init container with restartPolicy Always) with startup, liveness (/healthz) and
  readiness (/readyz) probes on a declared port; terminationGracePeriodSeconds is above
  preStop + shutdown_timeout from the ConfigMap's proxy.toml; pgweir has resource
  requests; every referenced ConfigMap, Secret and key exists; Service, PDB and monitor
  selectors match the pods and name ports that exist.

Writes each ConfigMap's proxy.toml to OUT_DIR/<dir>-<configmap>.toml so the Rust test
can load it with pgweir's own config loader.

Usage: validate.py DEPLOY_K8S_DIR SCHEMA_DIR OUT_DIR
"""

import json
import pathlib
import re
import sys
import tomllib

import jsonschema
import kubernetes_validate
import referencing
import yaml

VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}

failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}")


def seconds(text):
    """A pgweir duration ("20s", "1m", "1500ms", "0", or bare seconds) in seconds."""
    text = str(text).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    if re.fullmatch(r"[0-9.]+", text):
        return float(text)
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]+)", text):
        total += float(number) * units[unit]
    return total


def pod_spec(doc):
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def pgweir_container(spec):
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        if "pgweir" in c.get("image", ""):
            return c
    return None


def check_probe(where, container, kind, path):
    probe = container.get(kind)
    if not probe:
        fail(where, f"pgweir has no {kind}")
        return
    get = probe.get("httpGet", {})
    if get.get("path") != path:
        fail(where, f"{kind} should GET {path}, not {get.get('path')}")
    ports = {p.get("name") for p in container.get("ports", [])} | {
        p.get("containerPort") for p in container.get("ports", [])
    }
    if get.get("port") not in ports:
        fail(where, f"{kind} port {get.get('port')} is not a declared container port")


def check_workload(where, doc, by_kind, out_dir, dir_name):
    spec = pod_spec(doc)
    labels = doc["spec"]["template"]["metadata"].get("labels", {})
    selector = doc["spec"]["selector"].get("matchLabels", {})
    if not all(labels.get(k) == v for k, v in selector.items()):
        fail(where, "spec.selector does not match the pod template's labels")
    c = pgweir_container(spec)
    if c is None:
        fail(where, "no pgweir container")
        return
    sidecar = c in spec.get("initContainers", [])
    if sidecar and c.get("restartPolicy") != "Always":
        fail(where, "pgweir init container needs restartPolicy: Always (native sidecar)")
    check_probe(where, c, "startupProbe", "/healthz")
    check_probe(where, c, "livenessProbe", "/healthz")
    check_probe(where, c, "readinessProbe", "/readyz")
    requests = c.get("resources", {}).get("requests", {})
    if not {"cpu", "memory"} <= requests.keys():
        fail(where, "pgweir needs cpu and memory requests")
    # Drain: grace period above preStop + shutdown_timeout.
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_s = float(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0.0
    if not sidecar and not pre_stop:
        fail(where, "a standalone pgweir needs a preStop that lets endpoints drain")
    shutdown = None
    for vol in spec.get("volumes", []):
        if "configMap" in vol:
            name = vol["configMap"]["name"]
            cm = by_kind.get(("ConfigMap", name))
            if cm is None:
                fail(where, f"volume {vol['name']}: no ConfigMap {name} in this directory")
                continue
            text = cm.get("data", {}).get("proxy.toml")
            if text is None:
                continue
            config = tomllib.loads(text)
            shutdown = seconds(config.get("shutdown_timeout", "10s"))
            out = out_dir / f"{dir_name}-{name}.toml"
            out.write_text(text)
            print(f"wrote {out}")
        if "secret" in vol and ("Secret", vol["secret"]["secretName"]) not in by_kind:
            fail(where, f"volume {vol['name']}: no Secret {vol['secret']['secretName']}")
    if shutdown is None:
        fail(where, "pgweir's proxy.toml (a ConfigMap volume) not found")
    else:
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= pre_stop_s + shutdown:
            fail(where, f"terminationGracePeriodSeconds {grace} must exceed preStop "
                        f"{pre_stop_s}s + shutdown_timeout {shutdown}s")
        else:
            print(f"ok   {where}: grace {grace}s > preStop {pre_stop_s}s + shutdown_timeout {shutdown}s")
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secret = by_kind.get(("Secret", ref["name"]))
                keys = set((secret or {}).get("stringData", {})) | set((secret or {}).get("data", {}))
                if ref["key"] not in keys:
                    fail(where, f"env {env['name']}: Secret {ref['name']} has no key {ref['key']}")


def pods(by_kind):
    for (kind, _), doc in by_kind.items():
        if kind == "Deployment":
            yield doc["spec"]["template"]["metadata"].get("labels", {}), pod_spec(doc)


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def check_selectors(where, doc, by_kind):
    kind = doc["kind"]
    spec = doc["spec"]
    selector = spec["selector"] if kind != "Service" else {"matchLabels": spec["selector"]}
    matched = [(labels, pspec) for labels, pspec in pods(by_kind) if selects(selector, labels)]
    if not matched:
        fail(where, "selector matches no pod template in this directory")
        return
    port_names = set()
    for _, pspec in matched:
        for c in pspec.get("initContainers", []) + pspec.get("containers", []):
            port_names |= {p.get("name") for p in c.get("ports", [])}
    if kind == "Service":
        for p in spec["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in port_names:
                fail(where, f"targetPort {p['targetPort']} is no container port")
    if kind == "PodMonitor":
        for e in spec["podMetricsEndpoints"]:
            if e.get("port") not in port_names:
                fail(where, f"port {e.get('port')} is no container port of the selected pods")
    if kind == "ServiceMonitor":
        services = [d for (k, _), d in by_kind.items() if k == "Service"
                    and selects(spec["selector"], d["metadata"].get("labels", {}))]
        names = {p.get("name") for s in services for p in s["spec"]["ports"]}
        for e in spec["endpoints"]:
            if e.get("port") not in names:
                fail(where, f"port {e.get('port')} is no port of a selected Service")
    print(f"ok   {where}: selector matches {len(matched)} pod template(s)")


def main():
    k8s_dir, schema_dir, out_dir = (pathlib.Path(a) for a in sys.argv[1:4])
    out_dir.mkdir(parents=True, exist_ok=True)
    schemas = {p.name: json.loads(p.read_text()) for p in schema_dir.glob("*.json")}
    registry = referencing.Registry().with_resources(
        (name, referencing.Resource.from_contents(s)) for name, s in schemas.items()
    )
    monitor = jsonschema.Draft202012Validator(schemas["monitor.json"], registry=registry)
    files = sorted(k8s_dir.rglob("*.yaml"))
    if not files:
        fail(str(k8s_dir), "no manifests")
    dirs = {}
    for path in files:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is None:
                continue
            where = f"{path.relative_to(k8s_dir)}#{i} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if not {"apiVersion", "kind", "metadata"} <= doc.keys():
                fail(where, f"not a Kubernetes object: top-level keys {sorted(doc)}")
                continue
            if doc.get("kind") in CRD_KINDS:
                errors = sorted(monitor.iter_errors(doc), key=lambda e: list(e.path))
                for e in errors:
                    fail(where, f"{'/'.join(map(str, e.path))}: {e.message}")
                if not errors:
                    print(f"ok   {where}: monitoring.coreos.com/v1 (deploy/check/schemas)")
            else:
                for version in VERSIONS:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                        print(f"ok   {where}: Kubernetes {version} schema (strict)")
                    except kubernetes_validate.ValidationError as e:
                        fail(where, f"Kubernetes {version}: {'/'.join(map(str, e.path))}: {e.message}")
                    except (kubernetes_validate.SchemaNotFoundError,
                            kubernetes_validate.InvalidSchemaError) as e:
                        fail(where, f"Kubernetes {version}: no schema: {e}")
            dirs.setdefault(path.parent, []).append((where, doc))
    for directory, docs in dirs.items():
        by_kind = {(d["kind"], d["metadata"]["name"]): d for _, d in docs}
        for where, doc in docs:
            if doc["kind"] == "Deployment":
                check_workload(where, doc, by_kind, out_dir, directory.name)
            if doc["kind"] in {"Service", "PodDisruptionBudget", "PodMonitor", "ServiceMonitor"}:
                check_selectors(where, doc, by_kind)
    if failures:
        print(f"\n{len(failures)} problem(s)")
        sys.exit(1)
    print(f"\nall {len(files)} manifest files valid")


if __name__ == "__main__":
    main()
