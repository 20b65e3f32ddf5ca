{{/*
Names and labels shared by every template (Helm's and the Kubernetes recommended labels).
*/}}

{{/* The chart name, or nameOverride; 63 characters at most (a label value). */}}
{{- define "quantramp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's base name: fullnameOverride, else the release name when it already contains the chart
name (release "quantramp" -> "quantramp"), else "<release>-<name>". Objects append a suffix
("-operator"), so it is cut to 52 characters.
*/}}
{{- define "quantramp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's Deployment (and default ServiceAccount, RBAC) name: "<fullname>-operator". */}}
{{- define "quantramp.operatorName" -}}
{{- printf "%s-operator" (include "quantramp.fullname" .) -}}
{{- end -}}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "quantramp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The namespace of every namespaced object of the release. */}}
{{- define "quantramp.namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/* The operator image tag: image.tag, else the chart's appVersion. */}}
{{- define "quantramp.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* Selector labels: name, instance, component. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "quantramp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quantramp.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Labels of every object: the selector labels plus version, part-of, managed-by and helm.sh/chart.
Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "quantramp.labels" -}}
{{ include "quantramp.selectorLabels" . }}
app.kubernetes.io/version: {{ regexReplaceAll "[^a-zA-Z0-9_.-]+" (regexReplaceAll "@sha256:[a-f0-9]+" (include "quantramp.imageTag" .ctx) "") "" | trunc 63 | quote }}
app.kubernetes.io/part-of: quantramp
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "quantramp.chart" .ctx }}
{{- end -}}

{{/* The operator's ServiceAccount: serviceAccount.name, else the operator's name when created, else "default". */}}
{{- define "quantramp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "quantramp.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The trader image: trader.image.* over image.*, the tag defaulting to the chart's appVersion. */}}
{{- define "quantramp.traderImage" -}}
{{- $repo := default .Values.image.repository .Values.trader.image.repository -}}
{{- $tag := default (include "quantramp.imageTag" .) .Values.trader.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* "true" when a PodMonitor is wanted and the cluster serves its API (the Prometheus Operator's CRDs). */}}
{{- define "quantramp.podMonitor" -}}
{{- if and .Values.podMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor") -}}true{{- end -}}
{{- end -}}

{{/* The kopf peering object's name (--peering): the release's base name, one peering neighbourhood per release. */}}
{{- define "quantramp.peeringName" -}}
{{- include "quantramp.fullname" . -}}
{{- end -}}
