{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "ml-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name; 54 characters leave room for "-redis-headless". */}}
{{- define "ml-api.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ml-api.workerName" -}}{{ include "ml-api.fullname" . }}-worker{{- end -}}
{{- define "ml-api.redisName" -}}{{ include "ml-api.fullname" . }}-redis{{- end -}}

{{- define "ml-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ml-api.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ml-api.secretName" -}}
{{- default (include "ml-api.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The label a pod carries to be admitted by the predictor's NetworkPolicy. */}}
{{- define "ml-api.clientLabel" -}}{{ include "ml-api.fullname" . }}-client{{- end -}}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "ml-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ml-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* commonAnnotations as an annotations block body (empty when none). */}}
{{- define "ml-api.commonAnnotations" -}}
{{- with .Values.commonAnnotations }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{- define "ml-api.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ml-api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ml-api
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Usage: include "ml-api.componentLabels" (list . "predictor") */}}
{{- define "ml-api.componentLabels" -}}
{{ include "ml-api.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ml-api.componentSelectorLabels" -}}
{{ include "ml-api.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Images ----------------------------------------------------------------------------- */}}

{{/* Usage: include "ml-api.image" (dict "image" .Values.image "default" .Chart.AppVersion
     "global" $.Values.global). global.imageRegistry replaces the repository's registry (its
     first path element when that holds a dot or a colon, or is localhost) or is prepended. */}}
{{- define "ml-api.image" -}}
{{- $tag := .image.tag | default .default | toString -}}
{{- $repo := .image.repository -}}
{{- with (.global | default dict).imageRegistry -}}
{{- $parts := splitList "/" $repo -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq "localhost" $first)) -}}
{{- $repo = join "/" (rest $parts) -}}
{{- end -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $repo $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* checkov skips that apply only while an image is pinned by tag alone (with a digest, both
     checks pass). Usage: include "ml-api.digestSkips" (dict "image" .Values.image
     "value" "image.digest" "n" 2): annotations checkov.io/skip<n> and skip<n+1>. */}}
{{- define "ml-api.digestSkips" -}}
{{- if not .image.digest -}}
checkov.io/skip{{ .n }}: CKV_K8S_43=set {{ .value }} to pin by digest (recommended in production); by default the chart deploys an exact, immutable release tag
checkov.io/skip{{ add1 .n }}: CKV_K8S_15=with a release tag IfNotPresent pulls once per node, so scale-ups do not depend on the registry; with {{ .value }} set this check passes
{{- end -}}
{{- end -}}

{{/* Redis ------------------------------------------------------------------------------ */}}

{{/* host:port of Redis as seen from the KEDA operator (another namespace: a full name). */}}
{{- define "ml-api.redisAddress" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s.%s.svc:6379" (include "ml-api.redisName" .) .Release.Namespace -}}
{{- else -}}
{{- printf "%s:%d" (required "externalRedis.host is required when redis.enabled is false" .Values.externalRedis.host) (int .Values.externalRedis.port) -}}
{{- end -}}
{{- end -}}

{{- define "ml-api.redisStream" -}}{{ .Values.config.redisPrefix }}:jobs{{- end -}}

{{/* The Redis flavour's image and binaries. */}}
{{- define "ml-api.redisImage" -}}
{{- if eq .Values.redis.flavor "valkey" -}}{{- toYaml .Values.redis.valkeyImage -}}{{- else -}}{{- toYaml .Values.redis.image -}}{{- end -}}
{{- end -}}
{{- define "ml-api.redisServer" -}}{{ ternary "valkey-server" "redis-server" (eq .Values.redis.flavor "valkey") }}{{- end -}}
{{- define "ml-api.redisCli" -}}{{ ternary "valkey-cli" "redis-cli" (eq .Values.redis.flavor "valkey") }}{{- end -}}

{{/* Secrets: an explicit value wins, then the value already in the cluster (kept across
     upgrades), then a new random one. `lookup` is empty under `helm template`. */}}
{{- define "ml-api.existingSecretData" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "ml-api.fullname" .) -}}
{{- if $secret -}}{{- toYaml ($secret.data | default dict) -}}{{- else -}}{{- toYaml dict -}}{{- end -}}
{{- end -}}

{{/* Whether `lookup` reaches a cluster: under `helm template`, `--dry-run=client` and the
     GitOps tools that render with them it returns an empty map for everything, even the
     release namespace. */}}
{{- define "ml-api.lookupWorks" -}}
{{- if lookup "v1" "Namespace" "" .Release.Namespace -}}true{{- end -}}
{{- end -}}

{{/* Pods ------------------------------------------------------------------------------- */}}

{{/* Secret-backed environment shared by serve and worker. */}}
{{- define "ml-api.secretEnv" -}}
- name: ML_API_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ml-api.secretName" . }}
      key: redis-url
- name: SENTRY_DSN
  valueFrom:
    secretKeyRef:
      name: {{ include "ml-api.secretName" . }}
      key: sentry-dsn
      optional: true
{{- end -}}

{{/* The model volume (model.source other than `image`), its mount and the fetch init
     container. */}}
{{- define "ml-api.modelDir" -}}
{{- if eq .Values.model.source "image" -}}{{ .Values.config.modelDir }}{{- else -}}{{ .Values.model.mountPath }}{{- end -}}
{{- end -}}

{{- define "ml-api.modelVolume" -}}
{{- $m := .Values.model -}}
{{- if eq $m.source "volume" }}
{{- if not $m.volume.spec }}{{ fail "model.source=volume needs model.volume.spec (e.g. {persistentVolumeClaim: {claimName: models, readOnly: true}})" }}{{ end }}
- name: models
  {{- toYaml $m.volume.spec | nindent 2 }}
{{- else if eq $m.source "imageVolume" }}
- name: models
  image:
    reference: {{ required "model.source=imageVolume needs model.imageVolume.reference" $m.imageVolume.reference | quote }}
    pullPolicy: {{ $m.imageVolume.pullPolicy }}
{{- else if eq $m.source "fetch" }}
- name: models
  emptyDir:
    sizeLimit: {{ $m.fetch.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "ml-api.modelVolumeMount" -}}
{{- $m := .Values.model -}}
{{- if ne $m.source "image" }}
- name: models
  mountPath: {{ $m.mountPath }}
  readOnly: true
  {{- if and (eq $m.source "volume") $m.volume.subPath }}
  subPath: {{ $m.volume.subPath }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The fetch init container: files/fetch-model.sh (https) or oras (oci://). scripts/cluster-up.sh
     runs the same script to deliver the local cluster's model. */}}
{{- define "ml-api.modelFetchContainer" -}}
{{- $m := .Values.model -}}
{{- $f := $m.fetch -}}
{{- $url := required "model.source=fetch needs model.fetch.url (https://... .tar.gz or oci://...)" $f.url -}}
{{- $oci := hasPrefix "oci://" $url -}}
{{- if not (or $oci (hasPrefix "https://" $url) (hasPrefix "http://" $url)) }}{{ fail "model.fetch.url must start with https://, http:// or oci://" }}{{ end -}}
{{- $image := ternary $f.orasImage $f.image $oci -}}
- name: fetch-model
  image: {{ include "ml-api.image" (dict "image" $image "default" "" "global" .Values.global) | quote }}
  imagePullPolicy: {{ $image.pullPolicy }}
  {{- if $oci }}
  command: ["oras", "pull", "--output", {{ $m.mountPath | quote }}, {{ trimPrefix "oci://" $url | quote }}]
  {{- else }}
  command: ["/bin/sh", "-ec", {{ regexReplaceAll "(?m)^#.*\n" (.Files.Get "files/fetch-model.sh") "" | quote }}]
  {{- end }}
  env:
    - name: MODEL_URL
      value: {{ $url | quote }}
    - name: MODEL_SHA256
      value: {{ $f.sha256 | quote }}
    - name: MODEL_DIR
      value: {{ $m.mountPath | quote }}
    - name: HOME
      value: /tmp
  {{- with $f.credentialsSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  resources:
    {{- toYaml $f.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ $m.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* The data-set volume at /data: the shared ReadWriteMany claim, or an emptyDir. */}}
{{- define "ml-api.datasetsVolume" -}}
- name: datasets
{{- with .Values.datasets.persistence }}
{{- if .enabled }}
  persistentVolumeClaim:
    claimName: {{ .existingClaim | default (printf "%s-datasets" (include "ml-api.fullname" $)) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- end -}}

{{- define "ml-api.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ . }}
{{- end -}}

{{/* Telemetry settings shared by serve and worker (unset values are left out). */}}
{{- define "ml-api.telemetryConfig" -}}
{{- $c := .Values.config -}}
ML_API_LOG_FORMAT: "json"
RUST_LOG: {{ $c.logFilter | quote }}
{{- with $c.sentry.environment }}
SENTRY_ENVIRONMENT: {{ . | quote }}
{{- end }}
SENTRY_TRACES_SAMPLE_RATE: {{ $c.sentry.tracesSampleRate | toString | quote }}
{{- with $c.otlp.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
OTEL_SERVICE_NAME: {{ $c.otlp.serviceName | quote }}
{{- end -}}

{{/* Registry settings shared by serve and worker (unset values are left out). */}}
{{- define "ml-api.registryConfig" -}}
{{- $c := .Values.config -}}
ML_API_REGISTRY: "redis"
ML_API_REDIS_PREFIX: {{ $c.redisPrefix | quote }}
ML_API_MODEL_CACHE_SIZE: {{ $c.modelCacheSize | int64 | quote }}
ML_API_RECONCILE_INTERVAL: {{ $c.reconcileInterval | quote }}
{{- with $c.redisOpTimeout }}
ML_API_REDIS_OP_TIMEOUT: {{ . | quote }}
{{- end }}
{{- with $c.aliasSyncTimeout }}
ML_API_ALIAS_SYNC_TIMEOUT: {{ . | quote }}
{{- end }}
{{- with .Values.datasets }}
ML_API_DATASET_STORE: {{ .store | quote }}
{{- with .maxBytes }}
ML_API_MAX_DATASET_BYTES: {{ . | int64 | quote }}
{{- end }}
{{- with .maxTrainingBodyBytes }}
ML_API_MAX_TRAINING_BODY_BYTES: {{ . | int64 | quote }}
{{- end }}
{{- with .maxInlineTrainingCells }}
ML_API_MAX_INLINE_TRAINING_CELLS: {{ . | int64 | quote }}
{{- end }}
{{- with .maxTrainingCells }}
ML_API_MAX_TRAINING_CELLS: {{ . | int64 | quote }}
{{- end }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.sentinels }}
ML_API_REDIS_SENTINELS: {{ join "," .Values.externalRedis.sentinels | quote }}
ML_API_REDIS_SENTINEL_MASTER: {{ .Values.externalRedis.sentinelMaster | quote }}
{{- end }}
{{- end -}}

{{/* Egress rules of the predictor and worker: Redis, DNS, configured CIDRs. */}}
{{- define "ml-api.networkPolicyEgress" -}}
{{- $np := .Values.networkPolicy -}}
{{- if .Values.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "ml-api.componentSelectorLabels" (list . "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else }}
{{- if not .Values.externalRedis.cidrs }}
{{- fail "networkPolicy.enabled with an external Redis needs externalRedis.cidrs (the egress allow-list)" }}
{{- end }}
- to:
    {{- range .Values.externalRedis.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.externalRedis.port }}
      protocol: TCP
    {{- range (.Values.externalRedis.sentinels | default list) }}
    - port: {{ last (splitList ":" .) | int }}
      protocol: TCP
    {{- end }}
{{- end }}
- to:
    - namespaceSelector:
        {{- toYaml $np.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $np.dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- with $np.dns.cidrs }}
- to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
{{- range $np.egress.cidrs }}
- to:
    - ipBlock:
        cidr: {{ .cidr }}
        {{- with .except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- end }}
{{- end }}
{{- with $np.extraEgress }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end -}}

{{/* helm test pods ---------------------------------------------------------------------- */}}

{{- define "ml-api.testPodSkips" -}}
checkov.io/skip1: CKV_K8S_8=a one-shot helm test pod that exits after one curl has nothing for a liveness probe to restart
checkov.io/skip2: CKV_K8S_9=a one-shot helm test pod receives no traffic, so it has no readiness to report
{{- with include "ml-api.digestSkips" (dict "image" .Values.tests.image "value" "tests.image.digest" "n" 3) }}
{{ . }}
{{- end }}
{{- end -}}

{{- define "ml-api.testPodSpec" -}}
restartPolicy: Never
serviceAccountName: {{ include "ml-api.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ml-api.testContainerSpec" -}}
resources:
  requests:
    cpu: 10m
    memory: 16Mi
  limits:
    cpu: 100m
    memory: 64Mi
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}
