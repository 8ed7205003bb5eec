{{- define "amlwire.name" -}}amlwire{{- end -}}

{{- define "amlwire.fullname" -}}
{{- if contains "amlwire" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-amlwire" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "amlwire.labels" -}}
app.kubernetes.io/name: amlwire
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "amlwire.selectorLabels" -}}
app.kubernetes.io/name: amlwire
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "amlwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ .Values.serviceAccount.name }}{{- else -}}{{ .Values.serviceAccount.name | default "default" }}{{- end -}}
{{- end -}}
