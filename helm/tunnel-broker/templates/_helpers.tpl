{{/*
Names, labels and the derived settings every template shares.
*/}}

{{- define "tunnel-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tunnel-broker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tunnel-broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tunnel-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tunnel-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tunnel-broker.labels" -}}
helm.sh/chart: {{ include "tunnel-broker.chart" . }}
{{ include "tunnel-broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "tunnel-broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tunnel-broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tunnel-broker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the pods run on the Redis backend. */}}
{{- define "tunnel-broker.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* "true" when the chart's own Secret has something to hold. */}}
{{- define "tunnel-broker.ownSecret" -}}
{{- if or (and .Values.auth.secretKey (not .Values.auth.existingSecret)) (and .Values.redis.url (not .Values.redis.existingSecret)) (and .Values.apps.items (not .Values.apps.existingSecret)) }}true{{ end }}
{{- end }}

{{/* "true" when an apps file is mounted. */}}
{{- define "tunnel-broker.hasApps" -}}
{{- if or .Values.apps.items .Values.apps.existingSecret }}true{{ end }}
{{- end }}

{{- define "tunnel-broker.appsFileName" -}}
{{- if .Values.apps.existingSecret }}{{ .Values.apps.existingSecretKey }}{{ else }}apps.json{{ end }}
{{- end }}

{{- define "tunnel-broker.appsMountPath" -}}
/etc/tunnel-broker/apps
{{- end }}

{{/*
TB_PUBLIC_URL: the explicit value, else the Ingress host, else the in-cluster Service URL.
Connect URLs are built on it, so it must be what clients reach.
*/}}
{{- define "tunnel-broker.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host }}
{{- else }}
{{- $host := printf "%s.%s.svc.cluster.local" (include "tunnel-broker.fullname" .) .Release.Namespace }}
{{- if eq (int .Values.service.port) 80 }}
{{- printf "http://%s" $host }}
{{- else }}
{{- printf "http://%s:%d" $host (int .Values.service.port) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A setting's value as the broker reads it. Helm reads YAML numbers as float64, whose
default formatting (1.048576e+06) the broker's int() rejects; JSON formatting keeps
integers integral and fractions exact.
*/}}
{{- define "tunnel-broker.settingValue" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
The grace period must outlast everything the pod does after it is told to stop: the
preStop sleep, the drain, the broker's fixed waits (up to 5 s for sockets to finish
closing, 5 s for the server to stop), the webhook flush, plus a margin. Cut short, the
kubelet's SIGKILL would drop undelivered tunnel.closed webhooks.
*/}}
{{- define "tunnel-broker.terminationGracePeriodSeconds" -}}
{{- $drain := int (ceil .Values.config.drainSeconds) }}
{{- $flush := int (ceil .Values.config.shutdownFlushSeconds) }}
{{- add (int .Values.preStopSleepSeconds) $drain $flush 10 (int .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
Refuse values that would render a broken cluster. helm lint and helm template run this
too, so CI catches the mistake before an install does.
*/}}
{{- define "tunnel-broker.validate" -}}
{{- $redis := include "tunnel-broker.redisEnabled" . }}
{{- if and (gt (int .Values.replicaCount) 1) (not $redis) }}
{{- fail (printf "replicaCount=%d needs Redis: set redis.url or redis.existingSecret (pods share tunnels and presence through it; without it each pod is an island)" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not $redis) }}
{{- fail "autoscaling.enabled needs Redis: set redis.url or redis.existingSecret" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled needs ingress.host (clients connect to it, and publicUrl is built on it)" }}
{{- end }}
{{- end }}
