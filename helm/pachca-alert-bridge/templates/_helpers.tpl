{{/* Names and labels, in the style of prometheus-community charts. */}}
{{- define "pab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pab.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pab.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pab.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pab.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pab.secretName" -}}
{{- default (include "pab.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "pab.rulesConfigMap" -}}
{{- default (printf "%s-rules" (include "pab.fullname" .)) .Values.existingRulesConfigMap -}}
{{- end -}}

{{/* The store URL, and the refusals that keep the two modes apart. */}}
{{- define "pab.storeUrl" -}}
{{- if eq .Values.store.type "redis" -}}
{{- required "store.redis.url is required when store.type is redis" .Values.store.redis.url -}}
{{- else -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail "replicaCount > 1 needs store.type=redis: the SQLite file cannot be shared between pods (set store.type=redis and store.redis.url)" -}}
{{- end -}}
sqlite:////var/lib/pachca-alert-bridge/state.db
{{- end -}}
{{- end -}}
