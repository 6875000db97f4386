#!/usr/bin/env bash
# Lint the chart and validate what it renders, for the example values and every file in
# tessera/examples/: `helm lint --strict`, then `helm template | kubernetes-validate
# --strict` (Kubernetes' own OpenAPI schemas, bundled in the Python package: offline),
# and a YAML read that refuses duplicate keys (kubectl does; the validator does not).
#
# helm: $HELM, else `helm` on PATH, else the copy `make helm` fetched into build/helm.
# Without any, says so and exits 0: the values are still checked against
# values.schema.json by tests/unit/test_helm_values.py.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
chart="$here/tessera"
python=${PYTHON:-$root/.venv/bin/python}
validate=${KUBERNETES_VALIDATE:-$root/.venv/bin/kubernetes-validate}

helm=${HELM:-}
if [[ -z $helm ]]; then
  helm=$(command -v helm || true)
fi
if [[ -z $helm ]]; then
  helm=$(compgen -G "$root/build/helm/*/helm" | sort -V | tail -1 || true)
fi
if [[ -z $helm || ! -x $helm ]]; then
  echo "helm/check.sh: helm not found: chart lint and template validation SKIPPED" \
       "(install helm, set HELM=/path/to/helm, or run \`make helm\`)"
  exit 0
fi
if [[ ! -x $validate ]]; then
  echo "helm/check.sh: $validate not found (run \`make venv\`)" >&2
  exit 1
fi

echo "helm/check.sh: $("$helm" version --short) at $helm"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

values=("$chart/values.yaml")
for f in "$chart"/examples/*.yaml; do values+=("$f"); done

for v in "${values[@]}"; do
  name=$(basename "$v" .yaml)
  "$helm" lint --strict "$chart" -f "$v" >"$out/$name.lint" 2>&1 \
    || { cat "$out/$name.lint" >&2; echo "helm/check.sh: helm lint FAILED for $v" >&2; exit 1; }
  "$helm" template tessera "$chart" -f "$v" --namespace tessera >"$out/$name.yaml"
  # the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest known
  for kube in 1.25.0 "$("$validate" --help | sed -n 's/.*Defaults to \([0-9.]*\).*/\1/p')"; do
    "$validate" --strict --quiet -k "$kube" "$out/$name.yaml" \
      || { echo "helm/check.sh: kubernetes-validate $kube FAILED for $v" >&2; exit 1; }
  done
  "$python" - "$out/$name.yaml" <<'PY'
import sys

import yaml


class Strict(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {sorted(dup)}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


docs = [d for d in yaml.load_all(open(sys.argv[1]), Loader=Strict) if d]
kinds = sorted({d["kind"] for d in docs})
print(f"  {len(docs)} resources ({', '.join(kinds)}): no duplicate keys")
PY
  echo "helm/check.sh: $name: lint, template and kubernetes-validate --strict" \
       "(Kubernetes 1.25 and $kube) passed"
done

# what the schema (or the chart's own checks) must refuse, helm must refuse too
refuse() {  # refuse NAME EXPECTED-MESSAGE PYTHON-EDIT-OF-values
  "$python" - "$chart/values.yaml" "$out/$1.yaml" "$3" <<'PY'
import sys

import yaml

values = yaml.safe_load(open(sys.argv[1]))
exec(sys.argv[3])
yaml.safe_dump(values, open(sys.argv[2], "w"))
PY
  if "$helm" template tessera "$chart" -f "$out/$1.yaml" >/dev/null 2>"$out/$1.err"; then
    echo "helm/check.sh: $1 was NOT refused" >&2
    exit 1
  fi
  grep -q -- "$2" "$out/$1.err" \
    || { cat "$out/$1.err" >&2; echo "helm/check.sh: $1 refused for another reason" >&2; exit 1; }
}
refuse no-database-secret "databaseSecret is required" 'del values["shards"][0]["databaseSecret"]'
refuse redis-url-path "redis.url: Does not match pattern" 'values["redis"]["url"] = "redis://r:6379/0/x"'
refuse same-shard-name "is used twice" 'values["shards"][1]["name"] = "shard-0"'
refuse no-internal-secret "internalSecret is required" 'values["auth"]["internalSecret"] = None  # null removes it from the defaults'
refuse unknown-key "Additional property" 'values["shards"][0]["bukket"] = "x"'
echo "helm/check.sh: bad values refused (no database secret, no internal secret, a Redis URL with a path," \
     "duplicate shard, unknown key)"
