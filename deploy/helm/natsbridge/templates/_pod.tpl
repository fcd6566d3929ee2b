{{/*
The pod of the workload (StatefulSet or Deployment, see natsbridge.workload): the one
container running `natsbridge run`, its probes, config, secrets and the data volume.
*/}}
{{- define "natsbridge.pod" -}}
{{- $scheme := include "natsbridge.adminScheme" . }}
metadata:
  labels:
    {{- include "natsbridge.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed config rolls the pods.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "natsbridge.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: natsbridge
      image: {{ include "natsbridge.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - --config
        - /etc/natsbridge/bridge.yaml
        # Probes and scrapes come from outside the pod's loopback.
        - --admin-listen
        - 0.0.0.0:{{ .Values.admin.port }}
        - --log-level
        - {{ .Values.logLevel }}
        - --log-format
        - {{ .Values.logFormat }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      ports:
        - name: admin
          containerPort: {{ .Values.admin.port }}
          protocol: TCP
      env:
        - name: NATSBRIDGE_DATA_DIR
          value: {{ .Values.persistence.mountPath | quote }}
        - name: NATSBRIDGE_HEALTHCHECK_URL
          value: {{ printf "%s://127.0.0.1:%v/healthz" (lower $scheme) .Values.admin.port | quote }}
        {{- range .Values.secretEnv }}
        - name: {{ required "secretEnv[].name is required" .name }}
          valueFrom:
            secretKeyRef:
              name: {{ required "secretEnv[].secretName is required" .secretName }}
              key: {{ required "secretEnv[].key is required" .key }}
              {{- if hasKey . "optional" }}
              optional: {{ .optional }}
              {{- end }}
        {{- end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: admin
          scheme: {{ $scheme }}
        {{- toYaml .Values.startupProbe | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: admin
          scheme: {{ $scheme }}
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- if .Values.admin.tokenSecret.name }}
        # /readyz needs the bearer token, which an httpGet probe cannot read from a Secret.
        exec:
          command:
            - /opt/natsbridge/bin/python
            - -c
            - >-
              import ssl, urllib.request as u;
              token = open("{{ include "natsbridge.adminTokenFile" . }}").read().removesuffix("\n");
              u.urlopen(u.Request("{{ lower $scheme }}://127.0.0.1:{{ .Values.admin.port }}/readyz",
              headers={"Authorization": "Bearer " + token}),
              timeout={{ .Values.readinessProbe.timeoutSeconds | default 3 }},
              context=ssl._create_unverified_context())
        {{- else }}
        httpGet:
          path: /readyz
          port: admin
          scheme: {{ $scheme }}
        {{- end }}
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/natsbridge
          readOnly: true
        - name: data
          mountPath: {{ .Values.persistence.mountPath }}
        - name: tmp
          mountPath: /tmp
        {{- if .Values.admin.tokenSecret.name }}
        - name: admin-token
          mountPath: {{ include "natsbridge.adminTokenFile" . | dir }}
          readOnly: true
        {{- end }}
        {{- range .Values.secretFiles }}
        - name: secret-{{ .secretName }}
          mountPath: /run/secrets/{{ .secretName }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "natsbridge.fullname" . }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if and .Values.persistence.enabled .Values.persistence.existingClaim }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.existingClaim }}
    {{- else if not (include "natsbridge.claimPerPod" .) }}
    {{- if eq (include "natsbridge.workload" .) "Deployment" }}
    # A Deployment keeps no buffer on disk (jetstream or none): only the dead letters of
    # buffer-none routes, which live as long as the pod.
    {{- else }}
    # No persistence: the buffer lives as long as the pod, and a restart loses what it held.
    {{- end }}
    - name: data
      emptyDir: {}
    {{- end }}
    {{- if .Values.admin.tokenSecret.name }}
    - name: admin-token
      secret:
        secretName: {{ .Values.admin.tokenSecret.name }}
        items:
          - key: {{ .Values.admin.tokenSecret.key }}
            path: {{ include "natsbridge.adminTokenFile" . | base }}
        defaultMode: 0440
    {{- end }}
    {{- range .Values.secretFiles }}
    - name: secret-{{ required "secretFiles[].secretName is required" .secretName }}
      secret:
        secretName: {{ .secretName }}
        defaultMode: 0440
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpread }}
  {{- if .enabled }}
  # Replicas on different nodes (and zones): one node's loss takes one share of the work.
  topologySpreadConstraints:
    {{- range .topologyKeys }}
    - maxSkew: {{ $.Values.topologySpread.maxSkew }}
      topologyKey: {{ . }}
      whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "natsbridge.selectorLabels" $ | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
