{{/* ------------------------------------------------------------------ names */}}

{{/* The chart name, overridable. */}}
{{- define "hpchub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix for every object name (63 characters at most). */}}
{{- define "hpchub.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "hpchub.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "hpchub.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Names of every object, in one place (as z2jh's _helpers-names.tpl): templates never build
a name themselves. Usage: include "hpchub.names.hub" .
*/}}
{{- define "hpchub.names.operator" -}}{{ include "hpchub.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}
{{- define "hpchub.names.operatorWebhook" -}}{{ include "hpchub.fullname" . | trunc 46 | trimSuffix "-" }}-operator-webhook{{- end -}}
{{- define "hpchub.names.operatorWebhookCert" -}}{{ include "hpchub.fullname" . | trunc 41 | trimSuffix "-" }}-operator-webhook-cert{{- end -}}
{{- define "hpchub.names.operatorMetrics" -}}{{ include "hpchub.fullname" . | trunc 46 | trimSuffix "-" }}-operator-metrics{{- end -}}
{{- define "hpchub.names.operatorCallback" -}}{{ include "hpchub.fullname" . | trunc 45 | trimSuffix "-" }}-operator-callback{{- end -}}
{{- define "hpchub.names.callbackKey" -}}{{ include "hpchub.fullname" . | trunc 50 | trimSuffix "-" }}-callback-key{{- end -}}
{{- define "hpchub.names.hub" -}}{{ include "hpchub.fullname" . | trunc 59 | trimSuffix "-" }}-hub{{- end -}}
{{- define "hpchub.names.hubSecret" -}}{{ include "hpchub.fullname" . | trunc 52 | trimSuffix "-" }}-hub-secret{{- end -}}
{{- define "hpchub.names.hubConfig" -}}{{ include "hpchub.fullname" . | trunc 52 | trimSuffix "-" }}-hub-config{{- end -}}
{{- define "hpchub.names.traefik" -}}{{ include "hpchub.fullname" . | trunc 55 | trimSuffix "-" }}-traefik{{- end -}}
{{- define "hpchub.names.traefikApi" -}}{{ include "hpchub.fullname" . | trunc 51 | trimSuffix "-" }}-traefik-api{{- end -}}
{{- define "hpchub.names.redis" -}}{{ include "hpchub.fullname" . | trunc 57 | trimSuffix "-" }}-redis{{- end -}}
{{- define "hpchub.names.postgresql" -}}{{ include "hpchub.fullname" . | trunc 52 | trimSuffix "-" }}-postgresql{{- end -}}

{{/* The Kubernetes user name of the hub's ServiceAccount (the operator trusts it). */}}
{{- define "hpchub.hub.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "hpchub.names.hub" . }}
{{- end -}}

{{/* ----------------------------------------------------------------- labels */}}

{{- define "hpchub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component: include "hpchub.selectorLabels" (list . "hub")
*/}}
{{- define "hpchub.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "hpchub.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component's objects: include "hpchub.labels" (list . "hub") */}}
{{- define "hpchub.labels" -}}
{{- $root := index . 0 -}}
{{ include "hpchub.selectorLabels" . }}
helm.sh/chart: {{ include "hpchub.chart" $root }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: hpchub
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ----------------------------------------------------------------- images */}}

{{/* "repository:tag" or "repository@digest": include "hpchub.image" (list . .Values.hub.image) */}}
{{- define "hpchub.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "hpchub.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------- security contexts */}}

{{/* Pod security context: non-root with a fixed uid: include "hpchub.podSecurityContext" 10001 */}}
{{- define "hpchub.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context: read-only root, no privilege escalation, no capabilities. */}}
{{- define "hpchub.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Scheduling fields of a component's values (nodeSelector, tolerations, affinity). */}}
{{- define "hpchub.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* --------------------------------------------------------------- secrets */}}

{{/*
A secret value: the one given in values if any, else the value in the existing Secret
(lookup: kept across upgrades), else a new random one. Generators: "alnum" (48 letters and
digits), "hex32" (32 random bytes, hex), "base64-32" (32 random bytes, base64).
include "hpchub.secretValue" (list . given secretName key generator)
*/}}
{{- define "hpchub.secretValue" -}}
{{- $root := index . 0 -}}
{{- $given := index . 1 -}}
{{- $key := index . 3 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (index . 2) -}}
{{- if $given -}}
{{- $given -}}
{{- else if and $existing $existing.data (hasKey $existing.data $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else if eq (index . 4) "hex32" -}}
{{- randAlphaNum 64 | sha256sum -}}
{{- else if eq (index . 4) "base64-32" -}}
{{- randBytes 32 -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------ endpoints */}}

{{/* Redis "host:port" the hub and Traefik use. */}}
{{- define "hpchub.redis.address" -}}
{{- if .Values.redis.enabled -}}
{{ include "hpchub.names.redis" . }}:6379
{{- else -}}
{{ .Values.redis.external.address }}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the Redis password. */}}
{{- define "hpchub.redis.passwordSecret" -}}
{{- if .Values.redis.enabled -}}
name: {{ include "hpchub.names.redis" . }}
key: password
{{- else -}}
{{ toYaml .Values.redis.external.passwordSecret }}
{{- end -}}
{{- end -}}

{{/* The operator's webhook host: the fixed ClusterIP when set, else the Service's DNS name. */}}
{{- define "hpchub.operator.webhookHost" -}}
{{- if .Values.operator.webhook.clusterIP -}}
{{ .Values.operator.webhook.clusterIP }}
{{- else -}}
{{ include "hpchub.names.operatorWebhook" . }}.{{ .Release.Namespace }}.svc
{{- end -}}
{{- end -}}

{{/* The webhook configurations kopf fills: one name per release, under our API group. */}}
{{- define "hpchub.names.webhookConfiguration" -}}
{{ include "hpchub.fullname" . }}.hpchub.io
{{- end -}}

{{/* policy/v1 from Kubernetes 1.21 on, policy/v1beta1 before (the chart supports 1.20). */}}
{{- define "hpchub.pdb.apiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* Where the hub creates JupyterServers and their token Secrets. */}}
{{- define "hpchub.serversNamespace" -}}
{{ .Values.hub.serversNamespace | default .Release.Namespace }}
{{- end -}}
