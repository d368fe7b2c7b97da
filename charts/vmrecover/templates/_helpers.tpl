{{/* The agent's image: global.cattle.systemDefaultRegistry, else image.registry. */}}
{{- define "vmrecover.image" -}}
{{- $registry := .Values.image.registry -}}
{{- with .Values.global -}}{{- with .cattle -}}{{- with .systemDefaultRegistry -}}{{- $registry = . -}}{{- end -}}{{- end -}}{{- end -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "vmrecover.labels" -}}
app.kubernetes.io/name: vmrecover
{{- end -}}

{{/* Labels of the agent's pods (the DaemonSet's selector: never change them). */}}
{{- define "vmrecover.agentLabels" -}}
app.kubernetes.io/name: vmrecover
app.kubernetes.io/component: agent
{{- end -}}

{{/* The metrics address flag. */}}
{{- define "vmrecover.metricsAddr" -}}
{{- if .Values.metrics.enabled -}}
{{- printf "0.0.0.0:%d" (int .Values.metrics.port) -}}
{{- else -}}
off
{{- end -}}
{{- end -}}
