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
{{- include "postern.tokenSecret" (list . "admin") -}}
{{- end -}}

{{- /* The Secret of an admin API token: (list $ "admin"|"read"). */}}
{{- define "postern.tokenSecret" -}}
{{- $ := index . 0 -}}
{{- if eq (index . 1) "admin" -}}
{{- $.Values.adminToken.existingSecret | default (printf "%s-admin-token" (include "postern.fullname" $)) -}}
{{- else -}}
{{- $.Values.adminReadToken.existingSecret | default (printf "%s-admin-read-token" (include "postern.fullname" $)) -}}
{{- end -}}
{{- end -}}

{{- /* The admin token volumes, mounted whole (never subPath) so that the
  kubelet's updates reach the files and a rotation needs no restart. */}}
{{- define "postern.adminTokenVolumes" -}}
- name: admin-token
  secret:
    secretName: {{ include "postern.tokenSecret" (list . "admin") }}
    items:
      - {key: token, path: token}
- name: admin-read-token
  secret:
    secretName: {{ include "postern.tokenSecret" (list . "read") }}
    items:
      - {key: token, path: token}
{{- end -}}

{{- define "postern.adminTokenMounts" -}}
- {name: admin-token, mountPath: /var/run/postern/admin, readOnly: true}
- {name: admin-read-token, mountPath: /var/run/postern/admin-read, readOnly: true}
{{- end -}}

{{- define "postern.adminTokenArgs" -}}
- --admin-token-file=/var/run/postern/admin/token
- --admin-read-token-file=/var/run/postern/admin-read/token
{{- if .Values.metrics.protect }}
- --admin-protect-metrics
{{- end }}
{{- end -}}

{{- /* Pod-level security context for PodSecurity `restricted`. */}}
{{- define "postern.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "postern.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- /* Probes on the admin port: startup gives a slow start (a large
  snapshot, a cold cache) a minute before liveness counts. */}}
{{- define "postern.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "postern.selectorLabels" -}}
app.kubernetes.io/instance: {{ index . 0 }}
app.kubernetes.io/component: {{ index . 1 }}
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
