#!/usr/bin/env bash
# Deploys the greeter and its client to a kind cluster and shows the
# client's calls per pod. Needs docker, kind and kubectl. Run from anywhere:
#   examples/kind/deploy.sh            # cluster "disco" (created if missing)
#   CLUSTER=mine examples/kind/deploy.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cluster=${CLUSTER:-disco}
for cmd in docker kind kubectl; do
  command -v "$cmd" >/dev/null || { echo "deploy.sh: $cmd is required" >&2; exit 1; }
done
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
for c in greeter-server greeter-client; do
  docker build -f "$root/examples/Dockerfile" --build-arg CMD=$c -t disco/$c:latest "$root"
  kind load docker-image --name "$cluster" disco/$c:latest
done
ctx="kind-$cluster"
kubectl --context "$ctx" apply -f "$root/examples/k8s/namespace.yaml"
kubectl --context "$ctx" apply -f "$root/examples/k8s/greeter.yaml" -f "$root/examples/k8s/client-rbac.yaml"
kubectl --context "$ctx" -n demo rollout status deployment/greeter --timeout=120s
kubectl --context "$ctx" apply -f "$root/examples/k8s/client.yaml"
kubectl --context "$ctx" -n demo rollout status deployment/greeter-client --timeout=120s
echo "Try a rolling restart while the client runs:"
echo "  kubectl --context $ctx -n demo rollout restart deployment/greeter"
kubectl --context "$ctx" -n demo logs -f deployment/greeter-client
