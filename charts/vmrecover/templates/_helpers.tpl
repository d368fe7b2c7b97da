{{/* The agent's image: global.cattle.systemDefaultRegistry, else image.registry. */}}
{{- define "vmrecover.image" -}}
{{- $registry := .Values.image.registry -}}
{{- with .Values.global -}}{{- with .cattle -}}{{- with .systemDefaultRegistry -}}{{- $registry = . -}}{{- end -}}{{- end -}}{{- end -}}
{{- $ref := printf ":%s" (.Values.image.tag | default .Chart.AppVersion) -}}
{{- with .Values.image.digest -}}{{- $ref = printf "@%s" . -}}{{- end -}}
{{- if $registry -}}
{{- printf "%s/%s%s" $registry .Values.image.repository $ref -}}
{{- else -}}
{{- printf "%s%s" .Values.image.repository $ref -}}
{{- end -}}
{{- end -}}

{{/* The Kubernetes version rendered for: the kubeVersion value, else what Helm reports (the
cluster's on install/upgrade; Helm's built-in default offline). The one place that reads it. */}}
{{- define "vmrecover.kubeVersion" -}}
{{- .Values.kubeVersion | default .Capabilities.KubeVersion.Version -}}
{{- end -}}

{{/* Labels of every object: the standard ones Helm, Rancher and kubectl tools group by. */}}
{{- define "vmrecover.labels" -}}
app.kubernetes.io/name: vmrecover
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The agent's objects: the standard labels and its component. */}}
{{- define "vmrecover.agentObjectLabels" -}}
{{ include "vmrecover.labels" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* Labels of the agent's pods (the DaemonSet's selector: never change them). */}}
{{- define "vmrecover.agentLabels" -}}
app.kubernetes.io/name: vmrecover
app.kubernetes.io/component: agent
{{- end -}}

{{/* An alert's runbook_url: <metrics.prometheusRule.runbookBaseUrl>#<anchor>; by default
docs/runbook.md#<anchor>, the runbook's path in vmrecover's source tree (the project has no
public home a URL could name: Chart.yaml). */}}
{{- define "vmrecover.runbookUrl" -}}
{{- $base := .root.Values.metrics.prometheusRule.runbookBaseUrl | default "docs/runbook.md" -}}
{{- printf "%s#%s" $base .anchor -}}
{{- end -}}

{{/* The metrics address flag. */}}
{{- define "vmrecover.metricsAddr" -}}
{{- if .Values.metrics.enabled -}}
{{- printf "0.0.0.0:%d" (int .Values.metrics.port) -}}
{{- else -}}
off
{{- end -}}
{{- end -}}

{{/* The securityContext of the init containers that copy files onto the host. */}}
{{- define "vmrecover.installerSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
runAsNonRoot: false
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
seccompProfile:
  type: RuntimeDefault
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* vmrecover's configuration file (src/config/file.rs reads it; keys as these values): the
ConfigMap vmrecover-config in the pod, <stateDir>/config.yaml on the host. */}}
{{- define "vmrecover.configFile" -}}
# vmrecover's policy and tuning, rendered from the chart's values of the same names. Every
# command reads it (agent, status, run); flags override it; the agent re-reads it when it
# changes and keeps the old one if the new one is bad (docs/install.md).
{{ dict "actOn" .Values.actOn "bootWindow" .Values.bootWindow "stuckAfter" .Values.stuckAfter "controllerGrace" .Values.controllerGrace "maxVms" (int .Values.maxVms) "alsoFinalizers" .Values.alsoFinalizers "longhornNamespace" .Values.longhornNamespace "followFor" .Values.followFor | toYaml }}
{{- end -}}
