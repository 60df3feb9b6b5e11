{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "sds.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed with the chart name unless it already contains it. */}}
{{- define "sds.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sds.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sds.labels" -}}
helm.sh/chart: {{ include "sds.chart" . }}
app.kubernetes.io/name: {{ include "sds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the operator pod. A Deployment's selector is immutable, so this stays what the first plain
manifests used (name + component, no instance): upgrading from them keeps working. One operator per cluster
(kopf standalone, a cluster-scoped CRD) means the release name is not needed to tell pods apart.
*/}}
{{- define "sds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sds.name" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sds.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sds.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sds.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}

{{- define "sds.converterImage" -}}
{{- printf "%s:%s" (default .Values.image.repository .Values.converter.image.repository) (default .Values.image.tag .Values.converter.image.tag) }}
{{- end }}

{{/*
RBAC rules for cluster-scoped objects: kopf discovers the resource through its CRD and, when watching
namespaces, lists/watches the namespaces.
*/}}
{{- define "sds.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}

{{/* RBAC rules for the datasets' namespaces. */}}
{{- define "sds.namespacedRules" -}}
# the resource itself: never its spec (patch covers finalizers, kopf annotations and status)
- apiGroups: [shardeddataset.dev]
  resources: [shardeddatasets]
  verbs: [get, list, watch, patch]
- apiGroups: [shardeddataset.dev]
  resources: [shardeddatasets/status]
  verbs: [get, patch]
# converter Jobs and their pods (termination messages)
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
# source volumes and the optional AIS token
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events on every transition and failure; list: why a Job could not create its pods (FailedCreate)
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, list]
{{- end }}
