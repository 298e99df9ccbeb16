{{/* Chart name, truncated to the 63 characters Kubernetes allows in a name. */}}
{{- define "agentbus.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name; each service appends "-<service>" (kept ≤ 63 with the longest). */}}
{{- define "agentbus.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agentbus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentbus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agentbus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agentbus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentbus
{{- end -}}

{{- define "agentbus.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* What each program is, mirrored from the code (a unit test checks it against
     agentbus.shared.topics.SERVICE_TOPICS and consumer_group): its command, the topics it consumes
     with a consumer group <prefix>agentbus.<service>.<topic> (what the lag autoscaler watches), or
     one group over all topics (batchGroup), and the HTTP port of the two that serve one. */}}
{{- define "agentbus.catalog" -}}
intake:
  command: [faststream, run, "agentbus.intake.app:app"]
  consumes: [agentbus.tickets.received.v1]
planner:
  command: [faststream, run, "agentbus.planner.app:app"]
  consumes: [agentbus.tasks.classified.v1, agentbus.actions.verified.v1, agentbus.actions.decided.v1]
policy:
  command: [faststream, run, "agentbus.policy.app:app"]
  consumes: [agentbus.actions.proposed.v1, agentbus.approvals.decided.v1, agentbus.actions.executed.v1]
executor:
  command: [faststream, run, "agentbus.executor.app:app"]
  consumes: [agentbus.actions.decided.v1]
verifier:
  command: [faststream, run, "agentbus.verifier.app:app"]
  consumes: [agentbus.actions.executed.v1]
escalation:
  command: [python, -m, agentbus.escalation]
  consumes: [agentbus.escalations.requested.v1, agentbus.actions.decided.v1]
  port: 8081
trace-sink:
  command: [faststream, run, "agentbus.trace_sink.app:app"]
  batchGroup: trace-sink
console:
  command: [python, -m, agentbus.console]
  port: 8080
reconciler:
  command: [python, -m, agentbus.reconciler]
{{- end -}}

{{/* The program a services entry runs: executor-<group> runs the executor. */}}
{{- define "agentbus.program" -}}
{{- if hasPrefix "executor-" . -}}executor{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/* The catalog entry of a service, or a clear failure for a name the chart does not know.
     Called with (dict "root" $ "name" $name); returns YAML for fromYaml. */}}
{{- define "agentbus.program.spec" -}}
{{- $catalog := include "agentbus.catalog" .root | fromYaml -}}
{{- $program := include "agentbus.program" .name -}}
{{- if not (hasKey $catalog $program) -}}
{{- fail (printf "services.%s: unknown service; expected one of %s or executor-<tool group>" .name (keys $catalog | sortAlpha | join ", ")) -}}
{{- end -}}
{{- index $catalog $program | toYaml -}}
{{- end -}}

{{/* The Kafka principal of a service: every executor group shares agentbus-executor. */}}
{{- define "agentbus.principal" -}}
{{- printf "%s%s" .root.Values.kafka.principalPrefix (include "agentbus.program" .name) -}}
{{- end -}}

{{/* A service's autoscaling settings: .Values.autoscaling with services.<name>.autoscaling on top
     (key by key, so an explicit `enabled: false` wins; sprig's merge would drop a false). */}}
{{- define "agentbus.autoscaling" -}}
{{- $own := .svc.autoscaling | default dict -}}
{{- $result := dict -}}
{{- range $key := list "enabled" "minReplicas" "maxReplicas" -}}
{{- $_ := set $result $key (ternary (index $own $key) (index $.root.Values.autoscaling $key) (hasKey $own $key)) -}}
{{- end -}}
{{- $result | toJson -}}
{{- end -}}

{{/* "true" when the service is autoscaled: enabled, and it consumes with a consumer group. */}}
{{- define "agentbus.autoscaled" -}}
{{- $spec := include "agentbus.program.spec" . | fromYaml -}}
{{- $as := include "agentbus.autoscaling" . | fromJson -}}
{{- if and $as.enabled (or $spec.consumes $spec.batchGroup) -}}true{{- end -}}
{{- end -}}

{{/* Kafka connection and identity for one principal (a service or the init Job):
     (dict "root" $ "principal" "agentbus-policy"). The password is always a secretKeyRef. */}}
{{- define "agentbus.kafkaEnv" -}}
{{- $k := .root.Values.kafka -}}
{{- $proto := $k.securityProtocol -}}
{{- if not (has $proto (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail (printf "kafka.securityProtocol: %q is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" $proto) -}}
{{- end -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ $k.bootstrapServers | quote }}
- name: AGENTBUS_KAFKA_IDEMPOTENCE
  value: {{ $k.idempotence | quote }}
- name: AGENTBUS_TOPIC_PARTITIONS
  value: {{ $k.topics.partitions | quote }}
- name: AGENTBUS_TOPIC_REPLICATION_FACTOR
  value: {{ $k.topics.replicationFactor | quote }}
- name: AGENTBUS_KAFKA_SECURITY_PROTOCOL
  value: {{ $proto }}
{{- if hasPrefix "SASL" $proto }}
{{- if not (has $k.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) }}
{{- fail (printf "kafka.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" $k.sasl.mechanism) }}
{{- end }}
- name: AGENTBUS_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism }}
- name: AGENTBUS_KAFKA_SASL_USERNAME
  value: {{ .principal | quote }}
- name: AGENTBUS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ printf "%s%s" .principal $k.credentialsSecretSuffix }}
      key: {{ $k.sasl.passwordKey }}
{{- end }}
{{- if and (hasSuffix "SSL" $proto) $k.ssl.caSecret.secretName }}
- name: AGENTBUS_KAFKA_SSL_CAFILE
  value: /etc/agentbus/kafka-ca/ca.crt
{{- end }}
{{- if eq $proto "SSL" }}
- name: AGENTBUS_KAFKA_SSL_CERTFILE
  value: /etc/agentbus/kafka-client/tls.crt
- name: AGENTBUS_KAFKA_SSL_KEYFILE
  value: /etc/agentbus/kafka-client/tls.key
{{- with $k.ssl.keyPasswordKey }}
- name: AGENTBUS_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ printf "%s%s" $.principal $k.credentialsSecretSuffix }}
      key: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The volumes behind kafkaEnv's files: the broker CA, and with SSL the principal's own client
     certificate (mTLS) from its own Secret. */}}
{{- define "agentbus.kafkaVolumes" -}}
{{- $k := .root.Values.kafka -}}
{{- if and (hasSuffix "SSL" $k.securityProtocol) $k.ssl.caSecret.secretName }}
- name: kafka-ca
  secret:
    secretName: {{ $k.ssl.caSecret.secretName }}
    items:
      - key: {{ $k.ssl.caSecret.key }}
        path: ca.crt
{{- end }}
{{- if eq $k.securityProtocol "SSL" }}
- name: kafka-client
  secret:
    secretName: {{ printf "%s%s" .principal $k.credentialsSecretSuffix }}
    defaultMode: 0440
    items:
      - key: {{ $k.ssl.certKey }}
        path: tls.crt
      - key: {{ $k.ssl.keyKey }}
        path: tls.key
{{- end }}
{{- end -}}

{{- define "agentbus.kafkaVolumeMounts" -}}
{{- $k := .root.Values.kafka -}}
{{- if and (hasSuffix "SSL" $k.securityProtocol) $k.ssl.caSecret.secretName }}
- name: kafka-ca
  mountPath: /etc/agentbus/kafka-ca
  readOnly: true
{{- end }}
{{- if eq $k.securityProtocol "SSL" }}
- name: kafka-client
  mountPath: /etc/agentbus/kafka-client
  readOnly: true
{{- end }}
{{- end -}}

{{/* Environment every agentbus container gets besides Kafka: prefix, telemetry, extras. */}}
{{- define "agentbus.commonEnv" -}}
- name: AGENTBUS_TOPIC_PREFIX
  value: {{ .Values.topicPrefix | quote }}
{{- if .Values.otel.endpoint }}
- name: AGENTBUS_OTEL_EXPORTER
  value: otlp
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
{{- end }}
{{- range $key, $value := .Values.env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "agentbus.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.secretName }}
      key: {{ .Values.database.secretKey }}
{{- end -}}

{{/* The ports in kafka.bootstrapServers ("a:9092,b:9093" → 9092, 9093), for egress rules. */}}
{{- define "agentbus.kafkaPorts" -}}
{{- $ports := list -}}
{{- range splitList "," .Values.kafka.bootstrapServers -}}
{{- $ports = append $ports (splitList ":" (trim .) | last | atoi) -}}
{{- end -}}
{{- $ports | uniq | toJson -}}
{{- end -}}

{{/* The policies ConfigMap as a volume with the given files of every workflow (keys
     "<workflow>.<file>", paths "<workflow>/<file>"): the decider takes bundle and rules, the model
     planner bundle and policy document. (dict "root" $ "files" (list "bundle.toml" …)) */}}
{{- define "agentbus.policiesVolume" -}}
{{- $files := .files -}}
- name: policies
  configMap:
    name: {{ include "agentbus.fullname" .root }}-policies
    items:
      {{- range $workflow, $_ := .root.Values.policies }}
      {{- range $files }}
      - key: {{ $workflow }}.{{ . }}
        path: {{ $workflow }}/{{ . }}
      {{- end }}
      {{- end }}
{{- end -}}

{{/* Environment variables from Secrets, one per {env, secretName, key} in .refs (the values at
     .values, named in the error when a field is missing; .env says what the variable is). */}}
{{- define "agentbus.secretEnv" -}}
{{- $ctx := . -}}
{{- range .refs }}
- name: {{ required (printf "%s[].env: %s" $ctx.values $ctx.env) .env }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "%s[].secretName" $ctx.values) .secretName }}
      key: {{ required (printf "%s[].key" $ctx.values) .key }}
{{- end }}
{{- end -}}
