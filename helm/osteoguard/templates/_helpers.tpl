{{/*
The chart name, or nameOverride.
*/}}
{{- define "osteoguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full resource name: fullnameOverride, else "<release>-<name>", or the release name alone when
it already contains the name. Kubernetes names are at most 63 characters.
*/}}
{{- define "osteoguard.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "osteoguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "osteoguard.labels" -}}
helm.sh/chart: {{ include "osteoguard.chart" . }}
{{ include "osteoguard.selectorLabels" . }}
app.kubernetes.io/version: {{ include "osteoguard.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: osteoguard
{{- end }}

{{/*
Selector labels of the server pods. The component label keeps the helm test pod out of the
Service and the NetworkPolicy.
*/}}
{{- define "osteoguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "osteoguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
The ServiceAccount's name.
*/}}
{{- define "osteoguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "osteoguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "osteoguard.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The image reference: repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "osteoguard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "osteoguard.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
A map as YAML without its null entries (e.g. runAsUser: null for OpenShift's assigned uids).
*/}}
{{- define "osteoguard.omitNull" -}}
{{- $out := dict }}
{{- range $key, $value := . }}
{{- if not (kindIs "invalid" $value) }}{{ $_ := set $out $key $value }}{{ end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The Secret the pods read: secrets.existingSecret, else the chart's own.
*/}}
{{- define "osteoguard.secretName" -}}
{{- default (printf "%s-secrets" (include "osteoguard.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The rules ConfigMap the pods mount: rules.existingConfigMap, else the chart's own.
*/}}
{{- define "osteoguard.rulesConfigMapName" -}}
{{- default (printf "%s-rules" (include "osteoguard.fullname" .)) .Values.rules.existingConfigMap }}
{{- end }}

{{/*
The rule folders ("<category>/<rule-id>") of the chart's own copy, files/rules/, one per line.
*/}}
{{- define "osteoguard.bundledRules" -}}
{{- range $path, $_ := .Files.Glob "files/rules/*/*/rule.yaml" }}
{{ $path | trimPrefix "files/rules/" | trimSuffix "/rule.yaml" }}
{{- end }}
{{- end }}

{{/*
The rule folders that are mounted, as a JSON list: rules.existingConfigMapRules when a ConfigMap
managed elsewhere lists its own rules, else the chart's copy.
*/}}
{{- define "osteoguard.ruleFolders" -}}
{{- if and .Values.rules.existingConfigMap .Values.rules.existingConfigMapRules }}
{{- toJson .Values.rules.existingConfigMapRules }}
{{- else }}
{{- toJson (compact (splitList "\n" (include "osteoguard.bundledRules" .))) }}
{{- end }}
{{- end }}

{{/*
The medication class files of the chart's own copy, files/rules/classes/, as a JSON list of
file names ("bone-agent.yaml"). A ConfigMap managed elsewhere holds the same classes.
*/}}
{{- define "osteoguard.classFiles" -}}
{{- $names := list }}
{{- range $path, $_ := .Files.Glob "files/rules/classes/*.yaml" }}
{{- $names = append $names (base $path) }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
The ConfigMap key of a medication class file: "bone-agent.yaml" becomes "classes__bone-agent.yaml".
*/}}
{{- define "osteoguard.classKey" -}}
{{- printf "classes__%s" . }}
{{- end }}

{{/*
The ConfigMap key of a rule folder: ConfigMap keys cannot hold "/", so
"monitoring/baseline-dexa" becomes "monitoring__baseline-dexa__rule.yaml".
*/}}
{{- define "osteoguard.ruleKey" -}}
{{- printf "%s/rule.yaml" . | replace "/" "__" }}
{{- end }}

{{/*
The checksum/rules pod annotation: the chart's ConfigMap content, or rules.checksum for a
ConfigMap managed elsewhere.
*/}}
{{- define "osteoguard.rulesChecksum" -}}
{{- if .Values.rules.existingConfigMap }}
{{- .Values.rules.checksum | default "external" }}
{{- else }}
{{- include (print .Template.BasePath "/configmap-rules.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
The database URL as the chart sees it (empty with an existing Secret).
*/}}
{{- define "osteoguard.databaseUrl" -}}
{{- if not .Values.secrets.existingSecret }}{{ .Values.database.url }}{{ end }}
{{- end }}

{{/*
OSTEOGUARD_PUBLIC_URL: publicUrl, else the first ingress host (https when a TLS entry lists it).
*/}}
{{- define "osteoguard.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $scheme := "http" }}
{{- range .Values.ingress.tls }}
{{- if has $host (.hosts | default list) }}{{ $scheme = "https" }}{{ end }}
{{- end }}
{{- printf "%s://%s" $scheme $host }}
{{- end }}
{{- end }}

{{/*
Refuse values that would deploy something unsafe or broken. Included by the Deployment.
*/}}
{{- define "osteoguard.validate" -}}
{{- $v := .Values }}
{{- if and (eq $v.auth.mode "off") (not $v.auth.iUnderstandThisIsUnauthenticated) }}
{{- fail "auth.mode=off turns off JWT verification: any caller that reaches the service could send patient data and read cards. Set auth.iUnderstandThisIsUnauthenticated=true to confirm, and never expose such a release to a shared network." }}
{{- end }}
{{- if and (eq $v.auth.mode "jwt") (not $v.secrets.existingSecret) (not $v.auth.trustedClients) }}
{{- fail "auth.mode=jwt needs the trusted CDS clients: set auth.trustedClients, or secrets.existingSecret with the trusted-clients file." }}
{{- end }}
{{- if and (not $v.secrets.existingSecret) (not $v.database.url) }}
{{- fail "database.url is required (postgresql://user:password@host:5432/db), or secrets.existingSecret holding it." }}
{{- end }}
{{- $url := include "osteoguard.databaseUrl" . }}
{{- if and (hasPrefix "sqlite" $url) (or $v.autoscaling.enabled (gt (int $v.replicaCount) 1)) }}
{{- fail "database.url is SQLite, but more than one pod would run: each pod would keep its own card audit, feedback and snoozes. Use PostgreSQL, or set autoscaling.enabled=false and replicaCount=1." }}
{{- end }}
{{- if and $v.patientHashKey.enabled (not $v.secrets.existingSecret) (not $v.patientHashKey.value) }}
{{- fail "patientHashKey.enabled needs patientHashKey.value, or secrets.existingSecret holding the key." }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas is greater than autoscaling.maxReplicas." }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)." }}
{{- end }}
{{- if and (eq $v.auth.mode "jwt") (not (include "osteoguard.publicUrl" .)) }}
{{- fail "auth.mode=jwt needs publicUrl (the external base URL EHRs call, e.g. https://osteoguard.example.org), or ingress.enabled with a host: it is the audience every CDS Hooks JWT must name, and the service refuses to start without it." }}
{{- end }}
{{- if lt (int $v.terminationGracePeriodSeconds) (add (int $v.preStopSleepSeconds) 20) }}
{{- fail "terminationGracePeriodSeconds must be at least preStopSleepSeconds + 20 (the service gives in-flight requests 20 s after SIGTERM)." }}
{{- end }}
{{- end }}
