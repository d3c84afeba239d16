#!/usr/bin/env bash
# Checks the deployment files, as CI does (.ci/run installs the tools; run it yourself with
# kubectl, kubernetes-validate, yamllint, hadolint, systemd-analyze and openssl on PATH, after
# `cargo build`):
#   1. every Kustomize overlay renders (`kubectl kustomize`), and what it renders validates
#      with `kubernetes-validate --strict` against the two newest Kubernetes versions that
#      kubernetes-validate knows; custom resources (no schema there) are handled explicitly;
#   2. the gateway.toml and AUTHGATE_* environment of each overlay pass `authgate check`
#      (so does deploy/systemd/gateway.toml);
#   3. yamllint passes on every YAML file under deploy/, hadolint on the Dockerfile;
#   4. deploy/systemd/authgate.service passes `systemd-analyze verify` (against the built
#      binary: verify needs ExecStart's program to exist) and keeps its sandbox.
# Environment: PYTHON (the interpreter kubernetes-validate is installed for; default
# python3), AUTHGATE (default target/debug/authgate).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
AUTHGATE=$(realpath "${AUTHGATE:-target/debug/authgate}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -x "$AUTHGATE" ] || { echo "no $AUTHGATE: build it first (cargo build)"; exit 1; }

# The two newest Kubernetes versions kubernetes-validate has schemas for, from the tool.
mapfile -t versions < <("$PYTHON" -c '
from kubernetes_validate.utils import all_versions, major_minor
minors = sorted({major_minor(v) for v in all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
print(*minors[-2:], sep="\n")')
[ "${#versions[@]}" -eq 2 ] || { echo "cannot list kubernetes-validate's versions"; exit 1; }
echo "kubernetes-validate $(kubernetes-validate --version), Kubernetes ${versions[*]}; $(kubectl version --client 2>/dev/null | head -1)"

# kubernetes-validate passes (exit 0, a WARN line) a kind it has no schema for. Only the
# custom resources listed here may do so; anything else unknown fails the check.
#   PodMonitor: validated next, against ci/podmonitor.schema.json (rendered.py crds).
#   Middleware, IngressRoute (Traefik): not validated, no schema for them here.
validate() {  # FILE ALLOWED_UNKNOWN_KINDS_REGEX
  local out rc=0 unknown
  out=$(kubernetes-validate --strict --quiet -k "${versions[0]}" -k "${versions[1]}" "$1") || rc=$?
  unknown="Couldn't find schema for kind ($2) with api version"
  # Everything but the expected "no schema" warnings is shown.
  echo "$out" | grep -Ev "^WARN .*$unknown" | grep . || true
  if [ "$rc" -ne 0 ]; then echo "FAIL  $1: kubernetes-validate exit $rc"; return 1; fi
  if echo "$out" | grep '^WARN' | grep -Evq "$unknown"; then
    echo "FAIL  $1: a kind above has no schema: validate it or list it in deploy/check.sh"
    return 1
  fi
  echo "ok    kubernetes-validate --strict, Kubernetes ${versions[*]}: $(basename "$1")"
}

status=0
echo "== yamllint deploy/"
yamllint -c deploy/.yamllint.yaml -s deploy/ && echo "ok    yamllint" || status=1

for overlay in deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  rendered="$work/$name.yaml"
  echo "== overlay $name"
  kubectl kustomize "$overlay" > "$rendered"
  echo "   $(grep -c '^kind:' "$rendered") objects: $(grep '^kind:' "$rendered" | cut -d' ' -f2 | sort | tr '\n' ' ')"
  validate "$rendered" 'PodMonitor' || status=1
  "$PYTHON" deploy/kubernetes/ci/rendered.py crds "$rendered" || status=1
  mkdir "$work/$name"
  "$PYTHON" deploy/kubernetes/ci/rendered.py config "$rendered" "$work/$name"
  mapfile -t env < "$work/$name/env"
  # Only the overlay's environment: nothing of the caller's AUTHGATE_* leaks in.
  if env -i "${env[@]}" "$AUTHGATE" check --config "$work/$name/gateway.toml" > /dev/null; then
    echo "ok    authgate check: gateway.toml ${env[*]:+with ${env[*]//$work\/$name\//}}"
  else
    echo "FAIL  authgate check of overlay $name"; status=1
  fi
done

echo "== other manifests"
validate deploy/kubernetes/secret.example.yaml 'NONE' || status=1
validate deploy/traefik/kubernetes.yaml 'Middleware|IngressRoute' || status=1
echo "SKIPPED deploy/traefik/kubernetes.yaml: Middleware, IngressRoute are Traefik CRDs (no schema here)"

echo "== Dockerfile"
hadolint Dockerfile && echo "ok    hadolint Dockerfile" || status=1

echo "== systemd unit"
# verify needs ExecStart's program: a copy of the unit runs the binary just built.
sed "s|/usr/local/bin/authgate|$AUTHGATE|g" deploy/systemd/authgate.service > "$work/authgate.service"
# verify only warns (exit 0) about unknown keys and bad values: any output is a failure.
out=$(systemd-analyze verify "$work/authgate.service" 2>&1) || status=1
if [ -n "$out" ]; then echo "$out"; status=1; fi
# The sandbox must not regress: overall exposure at most 2.0 (0 best, 10 worst).
if systemd-analyze security --offline=yes --threshold=20 "$work/authgate.service" > "$work/security" 2>&1; then
  echo "ok    systemd-analyze verify; $(grep -o 'Overall exposure level.*' "$work/security")"
else
  cat "$work/security"; echo "FAIL  systemd-analyze security: exposure above 2.0"; status=1
fi
# The unit's gateway.toml passes `authgate check`, its credentials replaced by placeholders
# (a throw-away self-signed certificate for the TLS listener).
creds="$work/credentials"; mkdir "$creds"
echo ci-placeholder-client-secret > "$creds/client-secret"
head -c 32 /dev/urandom | base64 > "$creds/cookie-secrets"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=app.example.com -keyout "$creds/tls.key" -out "$creds/tls.crt" 2> /dev/null
sed "s|/run/credentials/authgate.service/|$creds/|g" deploy/systemd/gateway.toml > "$work/systemd.toml"
if env -i "$AUTHGATE" check --config "$work/systemd.toml" > /dev/null; then
  echo "ok    authgate check: deploy/systemd/gateway.toml"
else
  echo "FAIL  authgate check of deploy/systemd/gateway.toml"; status=1
fi
[ "$status" -eq 0 ] && echo "deployment files: all checks passed"
exit $status
