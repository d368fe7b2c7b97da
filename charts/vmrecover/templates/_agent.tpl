{{/* The parts of the agent's pod that the DaemonSet (daemonset.yaml) and the Helm test Pod
(tests/check-pod.yaml) share, so `helm test` checks exactly what the agent will run with. */}}

{{/* Where the agent's pods may run: tolerations, nodeSelector, affinity, priority class. */}}
{{- define "vmrecover.agentScheduling" -}}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "vmrecover.agentPlacement" . | trim }}
{{ . }}
{{- end }}
{{- end -}}

{{/* Where the agent's pods may go, without the tolerations (the Helm test pod, scheduled
onto a node that works, takes only this). */}}
{{- define "vmrecover.agentPlacement" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The pod annotation for the agent's container on Kubernetes < 1.30 (rendered only there). */}}
{{- define "vmrecover.agentAppArmorAnnotation" -}}
# The container runtime's default AppArmor profile only lets a container ptrace-read
# peers under the same profile, so reading /proc/<pid>/fd and /proc/<pid>/exe of the
# host's virt-launcher/qemu processes would be refused even with CAP_SYS_PTRACE.
# Kubernetes < 1.30 knows only this annotation; from 1.30 the container's
# securityContext.appArmorProfile says the same (the kubeVersion value or Helm's version).
container.apparmor.security.beta.kubernetes.io/vmrecover: unconfined
{{- end -}}

{{/* The agent container's environment: this node, the namespace, the host paths, the log
level, the Longhorn namespace; every command run in the pod reads the same. */}}
{{- define "vmrecover.agentEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
# The node Lease goes into the namespace the agent runs in (rbac.yaml's Role).
- name: VMRECOVER_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
# The same places as the arguments above, for commands run in the pod:
# `kubectl exec ds/vmrecover -- vmrecover status` reads what the agent reads
# (the policy too: /etc/vmrecover/config.yaml is every command's default).
- name: VMRECOVER_HOST_ROOT
  value: /host
- name: VMRECOVER_JOURNAL_DIR
  value: /host{{ .Values.journalDir }}
- name: VMRECOVER_STATE_DIR
  value: {{ .Values.stateDir }}
- name: VMRECOVER_LOG
  value: {{ .Values.logLevel | quote }}
{{- with .Values.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
# Where Longhorn's volumes and attachments are read (the Role rbac.yaml grants).
- name: VMRECOVER_LONGHORN_NAMESPACE
  value: {{ .Values.longhornNamespace | quote }}
{{- end -}}

{{/* The agent container's securityContext. */}}
{{- define "vmrecover.agentSecurityContext" -}}
{{- $appArmorField := semverCompare ">=1.30-0" (include "vmrecover.kubeVersion" .) }}
{{- if $appArmorField }}
# The container runtime's default AppArmor profile only lets a container
# ptrace-read peers under the same profile: reading /proc/<pid>/fd and exe of the
# host's launchers/qemu would be refused even with CAP_SYS_PTRACE (Kubernetes
# >= 1.30; older clusters get the pod annotation instead).
appArmorProfile:
  type: Unconfined
{{- end }}
# root: other users' /proc entries (launchers run as UID 107) are only readable
# by UID 0 with the capabilities below.
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
  add:
    # Read /proc/<pid>/fd and /proc/<pid>/exe of other users' processes (which
    # process holds /dev/longhorn/<volume> open; what a process runs): the
    # kernel checks ptrace read access for these.
    - SYS_PTRACE
    # Read and search files and directories owned by other users regardless of
    # their mode (launcher/qemu state under the host root, the host journal).
    - DAC_READ_SEARCH
    # Orphan kill: SIGTERM/SIGKILL to a leftover qemu/launcher of another user,
    # only when the operator asks for it.
    - KILL
{{- end -}}

{{/* The agent container's mounts. */}}
{{- define "vmrecover.agentVolumeMounts" -}}
# The host's / read-only: /proc (processes, mountinfo), /dev/longhorn, /sys,
# the journal. HostToContainer: mounts made on the host later (a volume attached
# after we started) are seen here too.
- name: host-root
  mountPath: /host
  readOnly: true
  mountPropagation: HostToContainer
# Boot records, intents, agent-status.json, last-run.json: shared with
# vmrecover-boot.service on the host, persistent across reboots.
- name: state
  mountPath: {{ .Values.stateDir }}
# Scratch for journalctl; the root filesystem is read-only.
- name: tmp
  mountPath: /tmp
# The policy and tuning (configmap.yaml); re-read by the agent when it changes.
- name: config
  mountPath: /etc/vmrecover
  readOnly: true
{{- end -}}

{{/* The agent pod's volumes (host mode: no host root and no scratch). */}}
{{- define "vmrecover.agentVolumes" -}}
- name: config
  configMap:
    name: vmrecover-config
{{- if not .Values.hostUnits.cloudInit.hostMode }}
- name: host-root
  hostPath:
    path: /
    type: Directory
{{- end }}
- name: state
  hostPath:
    # On Harvester /var/lib is mostly tmpfs: /usr/local persists.
    path: {{ .Values.stateDir }}
    type: DirectoryOrCreate
{{- if not .Values.hostUnits.cloudInit.hostMode }}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end }}
{{- end -}}
