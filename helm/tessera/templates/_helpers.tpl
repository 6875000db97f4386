{{/* Names: <release>-<shard>-<role>, <release>-router. Labels: the recommended ones. */}}
{{- define "tessera.name" -}}
{{- printf "%s" .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}

{{/* labels besides the selector ones (always written together with tessera.selector) */}}
{{- define "tessera.labels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one workload: (dict "root" $ "component" "ingest" "shard" "shard-0") */}}
{{- define "tessera.selector" -}}
app.kubernetes.io/name: tessera
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .shard }}
tessera.io/shard: {{ .shard }}
{{- end }}
{{- end -}}

{{- define "tessera.image" -}}
image: {{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy | default "IfNotPresent" }}
{{- end -}}

{{/* the registry's view of the shards: NAME=INGEST,INDEX,RETRIEVE for tessera.router.registry.migrate */}}
{{- define "tessera.shardArg" -}}
{{- $base := printf "%s-%s" (include "tessera.name" .root) .shard.name -}}
{{- printf "%s=http://%s-ingest:8101,http://%s-index:8102,http://%s-retrieve:8103" .shard.name $base $base $base -}}
{{- end -}}

{{/* what JSON Schema cannot say: shard names are unique */}}
{{- define "tessera.check" -}}
{{- $names := dict -}}
{{- range .Values.shards -}}
{{- if hasKey $names .name -}}
{{- fail (printf "shards: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- end -}}
{{- end -}}

{{- define "tessera.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
{{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* liveness /healthz (the process answers), readiness /readyz (its dependencies do) */}}
{{- define "tessera.httpProbes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: http}
{{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: http}
{{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end -}}

{{- define "tessera.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{- define "tessera.s3Env" -}}
- name: TESSERA_S3_ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
- name: TESSERA_S3_REGION
  value: {{ .Values.s3.region | quote }}
- name: TESSERA_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.credentialsSecret }}, key: access-key-id}
- name: TESSERA_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.credentialsSecret }}, key: secret-access-key}
{{- end -}}

{{/* a shard's settings: (dict "root" $ "shard" $shard) */}}
{{- define "tessera.shardEnv" -}}
- name: TESSERA_SHARD
  value: {{ .shard.name | quote }}
- name: TESSERA_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .shard.databaseSecret.name }}, key: {{ .shard.databaseSecret.key }}}
- name: TESSERA_REDIS_URL
  value: {{ .root.Values.redis.url | quote }}
- name: TESSERA_STORAGE_URL
  value: {{ printf "s3://%s" .shard.bucket | quote }}
- name: TESSERA_LOG_LEVEL
  value: {{ .root.Values.logLevel | default "info" | quote }}
{{ include "tessera.internalSecretEnv" .root }}
{{ include "tessera.s3Env" .root }}
{{- end -}}

{{/* the shards' internal credential (every service of a shard, the router, the rebalance) */}}
{{- define "tessera.internalSecretEnv" -}}
- name: TESSERA_INTERNAL_SECRET
  valueFrom:
    secretKeyRef: {name: {{ .Values.auth.internalSecret.name }}, key: {{ .Values.auth.internalSecret.key }}}
{{- end -}}

{{- define "tessera.routerEnv" -}}
- name: TESSERA_ROUTER_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.router.databaseSecret.name }}, key: {{ .Values.router.databaseSecret.key }}}
- name: TESSERA_ROUTER_REDIS_URL
  value: {{ .Values.redis.url | quote }}
- name: TESSERA_REGISTRY_POLL
  value: {{ .Values.router.registryPoll | default 1.0 | toString | quote }}
- name: TESSERA_LOG_LEVEL
  value: {{ .Values.logLevel | default "info" | quote }}
- name: TESSERA_AUTH
  value: "on"
- name: TESSERA_AUTH_ISSUER
  value: {{ .Values.auth.issuer | default "" | quote }}
- name: TESSERA_AUTH_AUDIENCE
  value: {{ .Values.auth.audience | default "tessera" | quote }}
- name: TESSERA_AUTH_PERMISSION_PREFIX
  value: {{ .Values.auth.permissionPrefix | default "tessera:" | quote }}
- name: TESSERA_AUTH_LABELS_CLAIM
  value: {{ .Values.auth.labelsClaim | default "tessera_labels" | quote }}
{{- if .Values.dimse.enabled }}
- name: TESSERA_DIMSE_URL
  value: {{ printf "http://%s-dimse-http:8106" (include "tessera.name" .) | quote }}
{{- end }}
{{ include "tessera.internalSecretEnv" . }}
{{- end -}}
