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

{{/* "true" when the pods run on the Redis backend: a URL is given (any topology), or
the sentinel topology (its URL only carries the master's credentials and is optional). */}}
{{- define "tunnel-broker.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret (eq (include "tunnel-broker.redisTopology" .) "sentinel") }}true{{ end }}
{{- end }}

{{- define "tunnel-broker.redisTopology" -}}
{{- .Values.redis.topology | default "standalone" }}
{{- end }}

{{/* "true" when the pods get the sentinels' password (TB_REDIS_SENTINEL_PASSWORD). */}}
{{- define "tunnel-broker.sentinelPassword" -}}
{{- $s := .Values.redis.sentinel }}
{{- if and (eq (include "tunnel-broker.redisTopology" .) "sentinel") (or $s.password $s.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the chart's own Secret has something to hold. */}}
{{- define "tunnel-broker.ownSecret" -}}
{{- if or (and .Values.auth.secretKey (not .Values.auth.existingSecret)) (and .Values.redis.url (not .Values.redis.existingSecret)) (and (include "tunnel-broker.sentinelPassword" .) (not .Values.redis.sentinel.existingSecret)) (and .Values.apps.items (not .Values.apps.existingSecret)) (and .Values.admin.keys (not .Values.admin.existingSecret)) }}true{{ end }}
{{- end }}

{{/* Where the pods' Redis is, for NOTES.txt: never credentials. */}}
{{- define "tunnel-broker.redisSummary" -}}
{{- $topology := include "tunnel-broker.redisTopology" . }}
{{- if eq $topology "sentinel" }}
{{- printf "redis, sentinel: master %q via %s" .Values.redis.sentinel.masterName (join "," .Values.redis.sentinel.addresses) }}
{{- else if eq $topology "cluster" }}
{{- printf "redis, cluster (sharded pub/sub: Redis 7 or later)" }}
{{- else }}
{{- print "redis, standalone" }}
{{- end }}
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

{{/* "true" when the pods get operator keys (TB_ADMIN_KEYS): the admin API is on. */}}
{{- define "tunnel-broker.hasAdmin" -}}
{{- if or .Values.admin.keys .Values.admin.existingSecret }}true{{ end }}
{{- end }}

{{/* admin.keys as TB_ADMIN_KEYS says them: name:key, comma-separated. */}}
{{- define "tunnel-broker.adminKeys" -}}
{{- $pairs := list }}
{{- range .Values.admin.keys }}
{{- $pairs = append $pairs (printf "%s:%s" (toString (get . "name")) (toString (get . "key"))) }}
{{- end }}
{{- join "," $pairs }}
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
{{- fail (printf "replicaCount=%d needs Redis: set redis.url or redis.existingSecret, or redis.topology=sentinel with redis.sentinel.addresses (pods share tunnels and presence through it; without it each pod is an island)" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not $redis) }}
{{- fail "autoscaling.enabled needs Redis: set redis.url or redis.existingSecret, or redis.topology=sentinel with redis.sentinel.addresses" }}
{{- end }}
{{- include "tunnel-broker.validateRedis" . }}
{{- include "tunnel-broker.validateAdmin" . }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled needs ingress.host (clients connect to it, and publicUrl is built on it)" }}
{{- end }}
{{- end }}

{{/*
The Redis topology's values, as the broker will read them (RedisTopology.from_settings):
the schema checks the same, this covers installs that skip it and what it cannot say.
*/}}
{{- define "tunnel-broker.validateRedis" -}}
{{- $topology := include "tunnel-broker.redisTopology" . }}
{{- $sentinel := .Values.redis.sentinel }}
{{- $nodes := .Values.redis.cluster.nodes | default list }}
{{- $address := `^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([-A-Za-z0-9_.]*[A-Za-z0-9_])?):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$` }}
{{- if not (has $topology (list "standalone" "sentinel" "cluster")) }}
{{- fail (printf "redis.topology=%s: expected standalone, sentinel or cluster" $topology) }}
{{- end }}
{{- range $name, $list := dict "redis.sentinel.addresses" ($sentinel.addresses | default list) "redis.cluster.nodes" $nodes }}
{{- range $list }}
{{- if not (regexMatch $address (toString .)) }}
{{- fail (printf "%s: %q is not host:port" $name (toString .)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $topology "sentinel" }}
{{- if not $sentinel.addresses }}
{{- fail "redis.topology=sentinel needs redis.sentinel.addresses: the sentinels, host:port each" }}
{{- end }}
{{- if not $sentinel.masterName }}
{{- fail "redis.topology=sentinel needs redis.sentinel.masterName (the name the sentinels monitor, often mymaster)" }}
{{- end }}
{{- else }}
{{- if $sentinel.addresses }}
{{- fail (printf "redis.sentinel.addresses is set but redis.topology=%s: set redis.topology=sentinel" $topology) }}
{{- end }}
{{- if or $sentinel.password $sentinel.existingSecret }}
{{- fail (printf "redis.sentinel.password / existingSecret is set but redis.topology=%s: set redis.topology=sentinel" $topology) }}
{{- end }}
{{- end }}
{{- if eq $topology "cluster" }}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis.topology=cluster needs redis.url or redis.existingSecret: the URL of a seed node (credentials, rediss:// for TLS)" }}
{{- end }}
{{- if and .Values.redis.url (not .Values.redis.existingSecret) (not (regexMatch `^rediss?://[^/]*(/0?)?([?#].*)?$` .Values.redis.url)) }}
{{- fail "redis.url: a Redis Cluster has database 0 only (no /<db> other than /0)" }}
{{- end }}
{{- else if $nodes }}
{{- fail (printf "redis.cluster.nodes is set but redis.topology=%s: set redis.topology=cluster" $topology) }}
{{- end }}
{{- if and (ne $topology "standalone") .Values.redis.url (not .Values.redis.existingSecret) (not (regexMatch `^rediss?://` .Values.redis.url)) }}
{{- fail (printf "redis.url: the %s topology needs a redis:// or rediss:// URL" $topology) }}
{{- end }}
{{- end }}

{{/*
Operator keys, as the broker will read them (OperatorKeys.parse): the schema checks each
pair, this covers installs that skip it and what it cannot say (a name twice, or one key
under two names: the audit log would blame the wrong operator). Keys are never printed.
*/}}
{{- define "tunnel-broker.validateAdmin" -}}
{{- $namePattern := `^[A-Za-z0-9_.@-]{1,64}$` }}
{{- $keyPattern := `^[^\t-\r\x1c-\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000},]{32,}$` }}
{{- $keys := .Values.admin.keys | default list }}
{{- if not (kindIs "slice" $keys) }}
{{- fail "admin.keys: expected a list of {name, key}" }}
{{- end }}
{{- $names := dict }}
{{- $owners := dict }}
{{- range $i, $pair := $keys }}
{{- if not (kindIs "map" $pair) }}
{{- fail (printf "admin.keys[%d]: expected {name, key}" $i) }}
{{- end }}
{{- $name := toString (get $pair "name") }}
{{- $key := toString (get $pair "key") }}
{{- if not (regexMatch $namePattern $name) }}
{{- fail (printf "admin.keys[%d].name: %q is not an operator name (1 to 64 letters, digits, _ . @ -)" $i $name) }}
{{- end }}
{{- if not (regexMatch $keyPattern $key) }}
{{- fail (printf "admin.keys[%d] (%s): the key needs 32 or more characters, none of them white space or a comma (openssl rand -base64 33)" $i $name) }}
{{- end }}
{{- if hasKey $names $name }}
{{- fail (printf "admin.keys: operator name %q appears twice; give each operator a name of its own (the audit log records it)" $name) }}
{{- end }}
{{- if hasKey $owners $key }}
{{- fail (printf "admin.keys: %s and %s have the same key; give each operator a key of its own" (get $owners $key) $name) }}
{{- end }}
{{- $_ := set $names $name true }}
{{- $_ := set $owners $key $name }}
{{- end }}
{{- end }}
