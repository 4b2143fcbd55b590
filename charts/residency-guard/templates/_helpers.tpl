{{/*
Names. With the release name "residency-guard" every name below matches the
operator's built-in defaults (docs/operator-contract.md).
*/}}
{{- define "residency-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "residency-guard.fullname" -}}
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

{{- define "residency-guard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "residency-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "residency-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "residency-guard.labels" -}}
helm.sh/chart: {{ include "residency-guard.chart" . }}
{{ include "residency-guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: residency-guard
{{- end }}

{{/* The Secret the operator writes in selfManaged mode. */}}
{{- define "residency-guard.selfManagedSecret" -}}
{{- printf "%s-tls" (include "residency-guard.fullname" .) }}
{{- end }}

{{/* The Secret mounted at /etc/residency-guard/tls in the file-based modes. */}}
{{- define "residency-guard.tlsSecret" -}}
{{- if eq .Values.certificates.mode "certManager" }}
{{- printf "%s-serving-cert" (include "residency-guard.fullname" .) }}
{{- else if eq .Values.certificates.mode "existingSecret" }}
{{- required "certificates.existingSecret.name is required when certificates.mode=existingSecret" .Values.certificates.existingSecret.name }}
{{- end }}
{{- end }}

{{- define "residency-guard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The host of webhook.url (no scheme, no port), or nothing. */}}
{{- define "residency-guard.urlHost" -}}
{{- with .Values.webhook.url }}
{{- $host := (urlParse .).host }}
{{- if hasPrefix "[" $host }}
{{- regexReplaceAll "^\\[(.*)\\](:[0-9]+)?$" $host "${1}" }}
{{- else }}
{{- regexReplaceAll ":[0-9]+$" $host "" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Does the ConfigMap with data files exist? */}}
{{- define "residency-guard.hasConfig" -}}
{{- if or .Values.catalogue.extraRegions .Values.mainlandCidrs.extra .Values.mainlandCidrs.replace }}true{{ end }}
{{- end }}

{{/*
namespaceSelector for one webhook entry: never kube-system, kube-node-lease or
the release namespace (so the operator can never block itself or the control
plane), AND the user's webhook.namespaceSelector, AND (for the labelled-
namespaces entry) the data-class label on the Namespace.
Call with (dict "root" $ "classified" true|false).
*/}}
{{- define "residency-guard.namespaceSelector" -}}
{{- $root := .root }}
{{- $user := $root.Values.webhook.namespaceSelector | default dict }}
{{- $excluded := concat (list "kube-system" "kube-node-lease" $root.Release.Namespace) $root.Values.webhook.excludedNamespaces | uniq }}
{{- $exprs := list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded) }}
{{- if .classified }}
{{- $exprs = append $exprs (dict "key" "residencyguard.io/data-class" "operator" "Exists") }}
{{- end }}
{{- $exprs = concat $exprs ($user.matchExpressions | default list) }}
{{- $sel := dict "matchExpressions" $exprs }}
{{- with $user.matchLabels }}
{{- $_ := set $sel "matchLabels" . }}
{{- end }}
{{- toYaml $sel }}
{{- end }}

{{/*
Fields every webhook entry shares. Call with (dict "root" $ "path" "/validate/..."),
and optionally "failurePolicy" (default: webhook.failurePolicy).
*/}}
{{- define "residency-guard.webhookCommon" -}}
{{- $root := .root -}}
admissionReviewVersions: ["v1"]
sideEffects: None
timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
failurePolicy: {{ .failurePolicy | default $root.Values.webhook.failurePolicy }}
matchPolicy: Equivalent
clientConfig:
  {{- if $root.Values.webhook.url }}
  url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
  {{- else }}
  service:
    name: {{ include "residency-guard.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- end }}
  {{- if eq $root.Values.certificates.mode "existingSecret" }}
  {{- $ca := required "certificates.existingSecret.caBundle is required when certificates.mode=existingSecret (the PEM CA that signed the Secret's certificate)" $root.Values.certificates.existingSecret.caBundle }}
  caBundle: {{ if contains "-----BEGIN" $ca }}{{ $ca | b64enc }}{{ else }}{{ $ca | nospace }}{{ end }}
  {{- end }}
{{- end }}

{{/*
matchCondition shared by entries that judge objects by their spec and labels:
an UPDATE that changes neither (finalizers, annotations, ownerReferences
written by controllers and the garbage collector) cannot change the verdict,
so it is not sent. Every field access is guarded with has(): an evaluation
error would fall back to failurePolicy.
*/}}
{{- define "residency-guard.specOrLabelsChanged" -}}
- name: spec-labels-or-owners-changed
  expression: >-
    request.operation != 'UPDATE'
    || !has(object.spec) || !has(oldObject.spec)
    || object.spec != oldObject.spec
    || has(object.metadata.labels) != has(oldObject.metadata.labels)
    || (has(object.metadata.labels) && object.metadata.labels != oldObject.metadata.labels)
    || has(object.metadata.ownerReferences) != has(oldObject.metadata.ownerReferences)
    || (has(object.metadata.ownerReferences) && object.metadata.ownerReferences != oldObject.metadata.ownerReferences)
{{- end }}

{{/*
True when the object's own metadata carries the data-class label, before
or after the request (entry (1)'s objectSelector matches either, so an
UPDATE that removes the label still reaches the webhook through it).
*/}}
{{- define "residency-guard.objectLabelledCEL" -}}
(has(object.metadata.labels) && 'residencyguard.io/data-class' in object.metadata.labels) || (oldObject != null && has(oldObject.metadata.labels) && 'residencyguard.io/data-class' in oldObject.metadata.labels)
{{- end }}

{{/* True when the pod template (or a CronJob's) of `obj` carries the label. */}}
{{- define "residency-guard.templateLabelledCEL" -}}
(has({{ . }}.spec) && has({{ . }}.spec.template)
&& has({{ . }}.spec.template.metadata) && has({{ . }}.spec.template.metadata.labels)
&& 'residencyguard.io/data-class' in {{ . }}.spec.template.metadata.labels)
|| (has({{ . }}.spec) && has({{ . }}.spec.jobTemplate)
&& has({{ . }}.spec.jobTemplate.spec) && has({{ . }}.spec.jobTemplate.spec.template)
&& has({{ . }}.spec.jobTemplate.spec.template.metadata)
&& has({{ . }}.spec.jobTemplate.spec.template.metadata.labels)
&& 'residencyguard.io/data-class' in {{ . }}.spec.jobTemplate.spec.template.metadata.labels)
{{- end }}

{{/* Every pod-creating kind (docs/semantics.md). */}}
{{- define "residency-guard.workloadRules" -}}
- apiGroups: [""]
  apiVersions: ["v1"]
  resources: ["pods", "replicationcontrollers"]
  operations: ["CREATE", "UPDATE"]
  scope: Namespaced
- apiGroups: ["apps"]
  apiVersions: ["v1"]
  resources: ["deployments", "replicasets", "statefulsets", "daemonsets"]
  operations: ["CREATE", "UPDATE"]
  scope: Namespaced
- apiGroups: ["batch"]
  apiVersions: ["v1"]
  resources: ["jobs", "cronjobs"]
  operations: ["CREATE", "UPDATE"]
  scope: Namespaced
{{- end }}

{{/*
The egress-layer kinds egress.cni can read, one {apiGroups, resources}
per group (src/state/mod.rs LAYER_RESOURCES, LayerResource::enforced_under):
the RBAC's list/watch and the webhook's rules are exactly these.
*/}}
{{- define "residency-guard.egressLayerGroups" -}}
{{- $cni := .Values.egress.cni -}}
{{- if or (eq $cni "auto") (eq $cni "cilium") }}
- apiGroups: ["cilium.io"]
  apiVersions: ["v2"]
  resources: ["ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"]
{{- end }}
{{- if or (eq $cni "auto") (eq $cni "calico") }}
- apiGroups: ["crd.projectcalico.org"]
  apiVersions: ["v1"]
  resources: ["networkpolicies", "globalnetworkpolicies", "tiers", "networksets", "globalnetworksets"]
{{- end }}
{{- if ne $cni "cilium" }}
- apiGroups: ["policy.networking.k8s.io"]
  apiVersions: ["v1alpha1"]
  resources: ["adminnetworkpolicies", "baselineadminnetworkpolicies"]
{{- end }}
{{- end -}}
