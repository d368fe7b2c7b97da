{{/*
A paragraph for NOTES.txt (include "vmrecover.admissionPolicy.notes" .): what is missing when
the admission policy is not installed. Empty when it is.
*/}}
{{- define "vmrecover.admissionPolicy.notes" -}}
{{- if not (include "vmrecover.admissionPolicy.enabled" .) }}
The admission policy vmrecover-node-restriction is NOT installed
{{- if eq (toString .Values.admissionPolicy.enabled) "false" }}
(admissionPolicy.enabled=false).
{{- else }}
(the cluster does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy:
Kubernetes before 1.30, e.g. Harvester 1.4.0).
{{- end }}
The API server then does not restrict the agent's ServiceAccount to its own node: a
compromised agent can do whatever its RBAC allows, cluster-wide (docs/safety.md, "A
compromised or buggy node").
{{- end }}
{{- end -}}
