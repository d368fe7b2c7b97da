{{/*
Whether the admission policy is rendered: "true" or "". admissionPolicy.enabled is auto, true
or false. auto renders it where the cluster serves admissionregistration.k8s.io/v1
ValidatingAdmissionPolicy (Kubernetes 1.30+): on a live install .Capabilities.APIVersions
says so; else (an offline render, e.g. Harvester's add-on path or charts/render.py) the
Kubernetes version decides: .Values.kubeVersion when given (render.py --kube-version), else
.Capabilities.KubeVersion. Harvester 1.4.0 runs Kubernetes 1.29.9: no policy there.
*/}}
{{- define "vmrecover.admissionPolicy.enabled" -}}
{{- $e := toString .Values.admissionPolicy.enabled -}}
{{- if eq $e "true" -}}
true
{{- else if eq $e "auto" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" -}}
true
{{- else if semverCompare ">=1.30.0-0" (include "vmrecover.kubeVersion" .) -}}
true
{{- end -}}
{{- else if ne $e "false" -}}
{{- fail (printf "admissionPolicy.enabled must be auto, true or false, not %q" $e) -}}
{{- end -}}
{{- end -}}

{{/*
The finalizers vmrecover may remove, comma-separated, per kind: the ones it knows
(src/recovery/finalizers.rs KNOWN_FINALIZERS; tests/e2e/admission_policy_e2e.rs checks the
lists are the same) plus alsoFinalizers (the same value that becomes --also-finalizer). Both
policies (the agents' and the fence identity's) use them.
*/}}
{{- define "vmrecover.vmiFinalizers" -}}
{{- $vmi := list "kubevirt.io/foregroundDeleteVirtualMachine" "foregroundDeleteVirtualMachine" "kubevirt.io/virtualMachineControllerFinalize" "wrangler.cattle.io/VMController.BackfillObservedNetworkMacAddress" "wrangler.cattle.io/harvester-lb-vmi-controller" "wrangler.cattle.io/virtual-machine-deletion" "harvesterhci.io/VMController.UnsetOwnerOfPVCs" "wrangler.cattle.io/VMController.UnsetOwnerOfPVCs" "wrangler.cattle.io/VMIController.UnsetOwnerOfPVCs" -}}
{{- join "," (concat $vmi .Values.alsoFinalizers) -}}
{{- end -}}
{{- define "vmrecover.vmFinalizers" -}}
{{- $vm := list "kubevirt.io/virtualMachineControllerFinalize" "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot" "wrangler.cattle.io/VMController.ReconcileBackendStorageClone" "harvesterhci.io/VMController.UnsetOwnerOfPVCs" "wrangler.cattle.io/VMController.UnsetOwnerOfPVCs" "wrangler.cattle.io/VMIController.UnsetOwnerOfPVCs" "wrangler.cattle.io/harvester-lb-vm-controller" -}}
{{- join "," (concat $vm .Values.alsoFinalizers) -}}
{{- end -}}
