{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "natsbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart's unless it contains it. */}}
{{- define "natsbridge.fullname" -}}
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

{{- define "natsbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "natsbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "natsbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "natsbridge.labels" -}}
helm.sh/chart: {{ include "natsbridge.chart" . }}
{{ include "natsbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: bridge
{{- end }}

{{- define "natsbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "natsbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "natsbridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the admin token Secret is mounted (its key as the file "token"). */}}
{{- define "natsbridge.adminTokenFile" -}}
/run/natsbridge/admin/token
{{- end }}

{{/*
The config as written in the pod: .Values.config with bridge.data_dir on the volume and,
with a token Secret, bridge.admin.token read from its mounted file.
*/}}
{{- define "natsbridge.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $bridge := default dict (get $config "bridge") }}
{{- $_ := set $bridge "data_dir" .Values.persistence.mountPath }}
{{- if .Values.admin.tokenSecret.name }}
{{- $admin := default dict (get $bridge "admin") }}
{{- $_ := set $admin "token" (printf "${file:%s}" (include "natsbridge.adminTokenFile" .)) }}
{{- $_ := set $bridge "admin" $admin }}
{{- end }}
{{- $_ := set $config "bridge" $bridge }}
{{- toYaml $config }}
{{- end }}

{{/* HTTPS when the config serves the admin endpoint over TLS. */}}
{{- define "natsbridge.adminScheme" -}}
{{- if dig "bridge" "admin" "tls" "" .Values.config }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
bridge.drain_timeout in seconds: a number of seconds or "250ms", "30s",
"2m", "1h" as the config accepts it; 30 when unset; empty when it comes from ${env:…}.
*/}}
{{- define "natsbridge.drainSeconds" -}}
{{- $raw := dig "bridge" "drain_timeout" 30 .Values.config | toString | nospace }}
{{- if not (contains "${" $raw) }}
{{- if not (regexMatch "^[0-9]+([.][0-9]+)?(ms|s|m|h)?$" $raw) }}
{{- fail (printf "config.bridge.drain_timeout: expected seconds or a duration such as 30s, found %q" $raw) }}
{{- end }}
{{- $number := regexFind "^[0-9]+([.][0-9]+)?" $raw }}
{{- $unit := trimPrefix $number $raw }}
{{- $scale := get (dict "ms" 0.001 "s" 1.0 "" 1.0 "m" 60.0 "h" 3600.0) $unit }}
{{- mulf (float64 $number) $scale }}
{{- end }}
{{- end }}

{{/*
Refuses a literal value in `env` for a name that reads as a secret: secrets come from
Kubernetes Secrets (secretFiles), never written into the manifest.
*/}}
{{- define "natsbridge.checkEnv" -}}
{{- range $index, $item := .Values.env }}
{{- if and (hasKey $item "value") (regexMatch "(?i)(passw|passcode|secret|token|credential|api_?key|private_?key)" (toString $item.name)) }}
{{- fail (printf "env[%d] %s: a literal value for a secret; keep it in a Kubernetes Secret and mount it with secretFiles (${file:/run/secrets/SECRET/KEY} in the config)" $index $item.name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The PromQL label matchers of this release's series. */}}
{{- define "natsbridge.metricSelector" -}}
{{- .Values.prometheusRule.selector | default (printf "namespace=%q,job=%q" .Release.Namespace (include "natsbridge.fullname" .)) }}
{{- end }}

{{/* What every workload checks before it renders. */}}
{{- define "natsbridge.checks" -}}
{{- $drain := include "natsbridge.drainSeconds" . }}
{{- if and $drain (le (float64 .Values.terminationGracePeriodSeconds) (float64 $drain)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.bridge.drain_timeout (%ss): the bridge drains on SIGTERM before the kubelet kills it" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- if and .Values.persistence.enabled .Values.persistence.existingClaim (ne (int .Values.replicaCount) 1) }}
{{- fail (printf "persistence.existingClaim holds one buffer, and replicaCount is %v: two bridges never share a buffer (leave existingClaim empty for a claim per pod)" .Values.replicaCount) }}
{{- end }}
{{- include "natsbridge.checkEnv" . }}
{{- end }}

{{/*
A buffer setting's mode: a mode name, or a mapping's `mode`; `default` when unset (a
${env:…} reference counts as embedded: the chart cannot know, and a disk is the safe side).
*/}}
{{- define "natsbridge.bufferMode" -}}
{{- $buffer := .buffer }}
{{- $mode := "" }}
{{- if kindIs "string" $buffer }}
{{- $mode = $buffer }}
{{- else if kindIs "map" $buffer }}
{{- $mode = get $buffer "mode" | toString }}
{{- end }}
{{- if not $mode }}{{ .default }}{{ else if has $mode (list "embedded" "jetstream" "none") }}{{ $mode }}{{ else }}embedded{{ end }}
{{- end }}

{{/*
The workload: a StatefulSet with a claim per pod when a route buffers on local disk
(buffer embedded, the default), else a Deployment (jetstream, none: replicas own no
message). `workload` overrides it.
*/}}
{{- define "natsbridge.workload" -}}
{{- if ne .Values.workload "auto" }}
{{- .Values.workload }}
{{- else }}
{{- $default := include "natsbridge.bufferMode" (dict "buffer" (dig "bridge" "buffer" "" .Values.config) "default" "embedded") }}
{{- $modes := list }}
{{- $routes := .Values.config.routes | default list }}
{{- if or (not $routes) (.Values.config.migrations) }}
{{- $modes = append $modes $default }}
{{- end }}
{{- range $routes }}
{{- $modes = append $modes (include "natsbridge.bufferMode" (dict "buffer" (get . "buffer") "default" $default)) }}
{{- end }}
{{- if has "embedded" $modes }}StatefulSet{{ else }}Deployment{{ end }}
{{- end }}
{{- end }}

{{/* Non-empty when each pod gets a claim of its own (volumeClaimTemplates). */}}
{{- define "natsbridge.claimPerPod" -}}
{{- if and (eq (include "natsbridge.workload" .) "StatefulSet") .Values.persistence.enabled (not .Values.persistence.existingClaim) }}yes{{ end }}
{{- end }}
