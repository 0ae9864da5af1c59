{{- define "postern.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "postern.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "postern.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "postern.syncTlsSecret" -}}
{{- .Values.syncTls.existingSecret | default (printf "%s-sync-tls" (include "postern.fullname" .)) -}}
{{- end -}}

{{- define "postern.syncSecret" -}}
{{- .Values.syncToken.existingSecret | default (printf "%s-sync-token" (include "postern.fullname" .)) -}}
{{- end -}}

{{- define "postern.adminSecret" -}}
{{- .Values.adminToken.existingSecret | default (printf "%s-admin-token" (include "postern.fullname" .)) -}}
{{- end -}}

{{- /* Where the /upstream API writes: always within the operator's watch scope. */}}
{{- define "postern.upstreamApiNamespace" -}}
{{- $watch := .Values.operator.watchNamespace -}}
{{- $ns := .Values.upstreamApi.namespace | default $watch | default .Release.Namespace -}}
{{- if and $watch (ne $ns $watch) -}}
{{- fail (printf "upstreamApi.namespace %s must be operator.watchNamespace %s: the operator compiles only what it watches" $ns $watch) -}}
{{- end -}}
{{- $ns -}}
{{- end -}}
