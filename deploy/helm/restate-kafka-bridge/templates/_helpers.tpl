{{/* Names and labels. */}}
{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bridge.configMapName" -}}
{{- default (printf "%s-routes" (include "bridge.fullname" .)) .Values.existingConfigMap -}}
{{- end -}}

{{/*
Where each secret is mounted: the single place that knows the paths; the routing file must name
them (checked below) and docs/deploying.md lists them.
*/}}
{{- define "bridge.paths" -}}
kafkaSaslDir: /var/run/secrets/restate-bridge/kafka-sasl
kafkaSasl: /var/run/secrets/restate-bridge/kafka-sasl/password
kafkaOAuthDir: /var/run/secrets/restate-bridge/kafka-oauth
kafkaOAuth: /var/run/secrets/restate-bridge/kafka-oauth/client-secret
kafkaTlsDir: /etc/restate-bridge/kafka-tls
kafkaCa: /etc/restate-bridge/kafka-tls/ca.crt
kafkaCert: /etc/restate-bridge/kafka-tls/tls.crt
kafkaKey: /etc/restate-bridge/kafka-tls/tls.key
restateTokenDir: /var/run/secrets/restate-bridge/restate-token
restateToken: /var/run/secrets/restate-bridge/restate-token/token
metricsTokenDir: /var/run/secrets/restate-bridge/metrics-token
metricsToken: /var/run/secrets/restate-bridge/metrics-token/token
{{- end -}}

{{/*
One routing-file option against its mount: a mounted secret must be named by the option, and the
option must not name a mount path whose secret is not configured.
Arguments: table (parsed TOML table or nil), where ("[kafka] sasl_password_file"), option, path,
mounted (bool), value (the values key to set).
*/}}
{{- define "bridge.checkFileOption" -}}
{{- $got := "" -}}
{{- if .table -}}{{- $got = index .table .option | default "" | toString -}}{{- end -}}
{{- if and .mounted (ne $got .path) -}}
{{- fail (printf "%s is set, so the routing file must say %s = %q (it says %q)" .value .where .path $got) -}}
{{- end -}}
{{- if and (not .mounted) (eq $got .path) -}}
{{- fail (printf "the routing file's %s = %q names a file nothing mounts: set %s" .where .path .value) -}}
{{- end -}}
{{- end -}}

{{/* A routing-file duration ("30s", "1m30s", "500ms", "2h") in whole seconds, rounded up. */}}
{{- define "bridge.durationSeconds" -}}
{{- $parts := regexFindAll "[0-9]+(ms|d|h|m|s)" . -1 -}}
{{- if or (not $parts) (ne (join "" $parts) .) -}}
{{- fail (printf "[delivery] drain_timeout = %q: the chart reads only d/h/m/s/ms durations like \"45s\" or \"1m30s\"" .) -}}
{{- end -}}
{{- $ms := 0 -}}
{{- range $parts -}}
{{- $n := regexFind "^[0-9]+" . | int -}}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . -}}
{{- $ms = add $ms (mul $n (get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000) $unit)) -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/*
Checks of the inline routing file, rendered (as nothing) by the Deployment: it parses, its
drain_timeout fits the grace period, and its secret file options match the mounts.
*/}}
{{- define "bridge.checkRoutes" -}}
{{- if not .Values.existingConfigMap -}}
{{- $doc := fromToml (required "routes (the routing file) or existingConfigMap is required" .Values.routes) -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "routes is not valid TOML: %s" $doc.Error) -}}
{{- end -}}
{{- $delivery := $doc.delivery | default dict -}}
{{- $drain := include "bridge.durationSeconds" ($delivery.drain_timeout | default "30s") | int -}}
{{- if gt $drain (int .Values.drainTimeoutSeconds) -}}
{{- fail (printf "the routing file's [delivery] drain_timeout (%ds) is longer than drainTimeoutSeconds (%d): raise drainTimeoutSeconds, or the pod is killed mid-drain" $drain (int .Values.drainTimeoutSeconds)) -}}
{{- end -}}
{{- $p := include "bridge.paths" . | fromYaml -}}
{{- $s := .Values.secrets -}}
{{- $kafka := $doc.kafka | default dict -}}
{{- $restate := $doc.restate | default dict -}}
{{- $metrics := $doc.metrics | default dict -}}
{{- $tls := $s.kafkaTls.secretName -}}
{{- include "bridge.checkFileOption" (dict "table" $kafka "where" "[kafka] sasl_password_file" "option" "sasl_password_file" "path" $p.kafkaSasl "mounted" (not (empty $s.kafkaSasl.secretName)) "value" "secrets.kafkaSasl.secretName") -}}
{{- include "bridge.checkFileOption" (dict "table" $kafka "where" "[kafka] sasl_oauth_client_secret_file" "option" "sasl_oauth_client_secret_file" "path" $p.kafkaOAuth "mounted" (not (empty $s.kafkaOAuth.secretName)) "value" "secrets.kafkaOAuth.secretName") -}}
{{- include "bridge.checkFileOption" (dict "table" $kafka "where" "[kafka] ssl_cafile" "option" "ssl_cafile" "path" $p.kafkaCa "mounted" (and $tls $s.kafkaTls.caKey | empty | not) "value" "secrets.kafkaTls.secretName and caKey") -}}
{{- include "bridge.checkFileOption" (dict "table" $kafka "where" "[kafka] ssl_certfile" "option" "ssl_certfile" "path" $p.kafkaCert "mounted" (and $tls $s.kafkaTls.certKey | empty | not) "value" "secrets.kafkaTls.secretName and certKey") -}}
{{- include "bridge.checkFileOption" (dict "table" $kafka "where" "[kafka] ssl_keyfile" "option" "ssl_keyfile" "path" $p.kafkaKey "mounted" (and $tls $s.kafkaTls.keyKey | empty | not) "value" "secrets.kafkaTls.secretName and keyKey") -}}
{{- include "bridge.checkFileOption" (dict "table" $restate "where" "[restate] token_file" "option" "token_file" "path" $p.restateToken "mounted" (not (empty $s.restateToken.secretName)) "value" "secrets.restateToken.secretName") -}}
{{- include "bridge.checkFileOption" (dict "table" $metrics "where" "[metrics] token_file" "option" "token_file" "path" $p.metricsToken "mounted" (not (empty $s.metricsToken.secretName)) "value" "secrets.metricsToken.secretName") -}}
{{- end -}}
{{- end -}}
