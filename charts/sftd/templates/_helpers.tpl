{{/* Name of the chart, or nameOverride. */}}
{{- define "sftd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (as Wire's chart: release name, or release-chart).
It names the StatefulSet, its headless Service and so the pods' DNS names.
*/}}
{{- define "sftd.fullname" -}}
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

{{- define "sftd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. They are the same as in Wire's chart: a StatefulSet's
selector cannot change, and keeping them lets `helm upgrade` move a release
from Wire's chart to this one.
*/}}
{{- define "sftd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sftd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sftd.labels" -}}
helm.sh/chart: {{ include "sftd.chart" . }}
{{ include "sftd.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sftd.join-call.selectorLabels" -}}
app.kubernetes.io/name: join-call
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sftd.join-call.labels" -}}
helm.sh/chart: {{ include "sftd.chart" . }}
{{ include "sftd.join-call.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sftd.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Required values, checked once, with the messages of Wire's chart. */}}
{{- define "sftd.host" -}}
{{- required "Must specify host" .Values.host -}}
{{- end }}
{{- define "sftd.allowOrigin" -}}
{{- required "Must specify allowOrigin" .Values.allowOrigin -}}
{{- end }}

{{/*
The Service that holds only pods taking new calls (ready, not draining): the
Ingress sends /sft/ to it and the discovery lists its pods.
*/}}
{{- define "sftd.readyService" -}}
{{- printf "%s-ready" (include "sftd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* sftd's --drain-timeout: below terminationGracePeriodSeconds. */}}
{{- define "sftd.drainTimeout" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- if and (ne (toString .Values.drainTimeoutSeconds) "") (ne (toString .Values.drainTimeoutSeconds) "<nil>") -}}
{{- $t := int .Values.drainTimeoutSeconds -}}
{{- if ge $t $grace -}}
{{- fail (printf "drainTimeoutSeconds (%d) must be smaller than terminationGracePeriodSeconds (%d)" $t $grace) -}}
{{- end -}}
{{- $t -}}
{{- else -}}
{{- $margin := min 30 (max 2 (div $grace 10)) -}}
{{- if le $grace $margin -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) is too small to drain" $grace) -}}
{{- end -}}
{{- sub $grace $margin -}}
{{- end -}}
{{- end }}

{{/* "LO-HI", checked. */}}
{{- define "sftd.mediaPorts" -}}
{{- $parts := splitList "-" (toString .Values.mediaPorts) -}}
{{- if ne (len $parts) 2 -}}
{{- fail (printf "mediaPorts must be LO-HI, got %q" (toString .Values.mediaPorts)) -}}
{{- end -}}
{{- $lo := atoi (index $parts 0) -}}
{{- $hi := atoi (index $parts 1) -}}
{{- if or (lt $lo 1024) (gt $hi 65535) (gt $lo $hi) -}}
{{- fail (printf "mediaPorts %q: need 1024 <= LO <= HI <= 65535" (toString .Values.mediaPorts)) -}}
{{- end -}}
{{- printf "%d-%d" $lo $hi -}}
{{- end }}

{{/*
Security context of the sftd container: the operator's securityContext, with
what the data plane needs forced and hardening defaults added. See values.yaml.
*/}}
{{- define "sftd.securityContext" -}}
{{- $given := deepCopy (default dict .Values.securityContext) -}}
{{- $defaults := dict "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true -}}
{{- $forced := dict -}}
{{- if eq .Values.dataplane "userspace" -}}
{{- if and (hasKey $given "runAsUser") (eq (toString (index $given "runAsUser")) "0") -}}
{{- fail "dataplane userspace runs as non-root: securityContext.runAsUser must not be 0" -}}
{{- end -}}
{{- $_ := set $defaults "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- $forced = dict "runAsNonRoot" true "capabilities" (dict "drop" (list "ALL")) -}}
{{- else -}}
{{- $forced = dict "runAsUser" 0 "runAsNonRoot" false "capabilities" (dict "drop" (list "ALL") "add" (list "BPF" "NET_ADMIN" "PERFMON")) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $defaults $given $forced) -}}
{{- end }}

{{/* Security context of the helper containers (init, discovery, nginx). */}}
{{- define "sftd.helperSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Data of the sftd Secret (empty: no Secret, no volume). */}}
{{- define "sftd.secretData" -}}
{{- if and .Values.multiSFT.enabled .Values.sftTokenSecret -}}
{{- fail "multiSFT.enabled is true and sftTokenSecret is also set; please set the secret at multiSFT.secret" -}}
{{- end -}}
{{- if .Values.multiSFT.enabled -}}
{{- if not .Values.multiSFT.discoveryRequired -}}
zrest_secret.txt: {{ required "must specify authentication secret (multiSFT.secret)" .Values.multiSFT.secret | toString | b64enc | quote }}
{{- end -}}
{{- else if .Values.sftTokenSecret -}}
sftTokenSecret.txt: {{ .Values.sftTokenSecret | toString | b64enc | quote }}
{{- end -}}
{{- end }}
