#!/usr/bin/env bash
# Real brokers for natsbridge's integration tests, on loopback, as plain background processes.
#
#   services.sh up                 install what is missing, start everything, wait until it serves
#   services.sh down               stop everything this script started (data is kept)
#   services.sh status             one line per broker; exit 1 if any is down
#   services.sh env                `export NATSBRIDGE_...` lines: eval "$(services.sh env)"
#   services.sh start|stop|restart NAME... brokers: nats | rabbitmq | activemq | kafka | mosquitto
#                                  | nats-1 | nats-2 | nats-3 (the JetStream cluster's nodes: a lone
#                                  node is not ready before a second one runs, so start them together)
#   services.sh pid NAME           the broker's main PID (for SIGSTOP/SIGCONT fault tests)
#   services.sh logs NAME          tail the broker's log
#   services.sh rabbitmqctl ARGS   rabbitmqctl against the dev node
#   services.sh clean              down, then delete all broker data (not the install cache)
#
# Installs (all cached under ~/.cache/natsbridge, or $NATSBRIDGE_CACHE_DIR):
#   apt:   rabbitmq-server (with its rabbitmq_stomp plugin), activemq, mosquitto (MQTT)
#   go:    github.com/nats-io/nats-server/v2 (Debian's nats-server if the build fails),
#          github.com/nats-io/natscli/nats (optional, for `nats bench`; NATSBRIDGE_NATSCLI=0 skips)
#   maven: org.apache.kafka:kafka_2.13 and its runtime dependencies (deploy/dev/kafka/pom.xml)
# The 3-node NATS cluster (nats-1..3, JetStream R3-capable, client ports 4231-4233, routes
# 6231-6233, monitoring 8231-8233) is separate from the single `nats` on 4222; its nodes
# are started, stopped and restarted by name like any broker.
# Broker data and logs live in $NATSBRIDGE_SERVICES_DIR (default ~/.cache/natsbridge/services)
# and survive stop/start/restart/down. TLS listeners use the dev PKI made once with openssl
# in $NATSBRIDGE_SERVICES_DIR/pki: ca.pem (what clients trust), server and client
# certificates, exported as NATSBRIDGE_TLS_CA, NATSBRIDGE_TLS_CLIENT_CERT/_KEY.
# Kafka's SASL listeners: SCRAM-SHA-256 (9094), SCRAM-SHA-512 (9096), SASL_SSL with
# SCRAM-SHA-512 over TLS (9097) and PLAIN (9098), one user for all; the SCRAM credentials
# are (re)stored at start when a login fails, so an existing data dir gains them too.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${NATSBRIDGE_CACHE_DIR:-$HOME/.cache/natsbridge}"
STATE="${NATSBRIDGE_SERVICES_DIR:-$CACHE/services}"
BIN="$CACHE/bin"
PY="${NATSBRIDGE_PYTHON:-${PYTHON:-python3}}"
PROBE="$HERE/probe.py"

NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-v2.15.2}"
NATSCLI_VERSION="${NATSCLI_VERSION:-v0.5.0}"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"

HOST=127.0.0.1
NATS_PORT=4222
NATS_MONITOR_PORT=8222
NATS_CLUSTER_NODES=3
# node N of the cluster serves clients on CLIENT_BASE+N, routes on ROUTE_BASE+N, monitoring on MONITOR_BASE+N
NATS_CLUSTER_CLIENT_BASE=4230
NATS_CLUSTER_ROUTE_BASE=6230
NATS_CLUSTER_MONITOR_BASE=8230
AMQP_PORT=5672
RABBIT_STOMP_PORT=61613
RABBIT_MGMT_PORT=15672
RABBIT_DIST_PORT=25672
ACTIVEMQ_STOMP_PORT=61614
ACTIVEMQ_OPENWIRE_PORT=61616
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_SCRAM_PORT=9094
KAFKA_TLS_PORT=9095
KAFKA_SCRAM512_PORT=9096
KAFKA_SASL_SSL_PORT=9097
KAFKA_PLAIN_PORT=9098
MQTT_PORT=1883
MQTT_AUTH_PORT=1884
MQTT_TLS_PORT=8883
MQTT_USER=natsbridge
MQTT_PASSWORD=natsbridge-secret
KAFKA_SCRAM_USER=natsbridge
KAFKA_SCRAM_PASSWORD=natsbridge-secret
ACTIVEMQ_USER="admin"
ACTIVEMQ_PASSWORD="admin"

SERVICES=(nats nats-1 nats-2 nats-3 rabbitmq activemq kafka mosquitto)
RABBIT_BIN=/usr/lib/rabbitmq/bin
ACTIVEMQ_HOME=/usr/share/activemq
KAFKA_LIBS="$CACHE/kafka-libs/$KAFKA_VERSION"

log() { printf '[services] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --------------------------------------------------------------------------- install

dpkg_ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # A machine whose package lists were never fetched knows no candidates: update first.
  if ! apt-cache show "$@" >/dev/null 2>&1; then $SUDO apt-get update -q; fi
  if ! $SUDO apt-get install -y -q --no-install-recommends "$@"; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "$@"
  fi
}

# Go tools are built once per version into $CACHE/tools/NAME-VERSION/NAME (so `ps` shows
# the plain name); $BIN/NAME links to the newest one built.
tool_path() { echo "$CACHE/tools/$1-$2/$1"; }

nats_server_bin() {
  if [ -x "$(tool_path nats-server "$NATS_SERVER_VERSION")" ]; then
    tool_path nats-server "$NATS_SERVER_VERSION"
  elif [ -x /usr/bin/nats-server ]; then
    echo /usr/bin/nats-server
  fi
}

go_install() { # MODULE/PATH VERSION BINARY
  local pkg="$1" ver="$2" name="$3" tmp
  command -v go >/dev/null || {
    echo "go not found"
    return 1
  }
  local dest
  dest="$(tool_path "$name" "$ver")"
  mkdir -p "$BIN" "$CACHE/tools"
  tmp="$(mktemp -d "$CACHE/tools/.build.XXXXXX")"
  GOBIN="$tmp" GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" GOFLAGS=-mod=mod \
    CGO_ENABLED=0 go install -ldflags='-s -w' "$pkg@$ver"
  rm -rf "$(dirname "$dest")"
  mv "$tmp" "$(dirname "$dest")"
  ln -sfn "$dest" "$BIN/$name"
}

fetch_kafka_libs() {
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -B -q -f "$HERE/kafka/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp"
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  touch "$KAFKA_LIBS/.complete"
}

declare -A BG_PID=()
bg_task() { # NAME CMD... : run in the background, output to the install log
  local name="$1"
  shift
  log "installing $name ..."
  (
    start=$SECONDS
    "$@"
    echo $((SECONDS - start)) >"$STATE/install/$name.secs"
  ) >"$STATE/install/$name.log" 2>&1 &
  BG_PID[$name]=$!
}
bg_wait() { # NAME: 0 if the task succeeded
  local name="$1"
  if wait "${BG_PID[$name]}"; then
    log "installed $name in $(cat "$STATE/install/$name.secs")s"
    return 0
  fi
  log "installing $name failed; last lines of $STATE/install/$name.log:"
  tail -n 25 "$STATE/install/$name.log" >&2
  return 1
}

# Install whatever SERVICES ("$@") need and is not there yet; independent downloads in parallel.
install_missing() {
  mkdir -p "$STATE/install" "$BIN"
  local want=" $* " pkgs=() late_mvn=0
  command -v "$PY" >/dev/null || pkgs+=(python3)
  command -v setsid >/dev/null || pkgs+=(util-linux)
  if [[ $want == *" rabbitmq "* ]] && ! dpkg_ok rabbitmq-server; then pkgs+=(rabbitmq-server); fi
  if [[ $want == *" activemq "* ]] && ! dpkg_ok activemq; then pkgs+=(activemq); fi
  if [[ $want == *" mosquitto "* ]] && ! dpkg_ok mosquitto; then pkgs+=(mosquitto); fi
  if [[ $want == *" activemq "* || $want == *" kafka "* ]] && ! command -v java >/dev/null; then
    pkgs+=(openjdk-17-jre-headless)
  fi
  if [[ $want == *" kafka "* ]] && [ ! -f "$KAFKA_LIBS/.complete" ] && ! command -v mvn >/dev/null; then
    pkgs+=(maven)
    late_mvn=1
  fi
  if [ ${#pkgs[@]} -gt 0 ]; then bg_task apt apt_install "${pkgs[@]}"; fi

  if [[ $want == *" nats"[-\ ]* ]] && [ ! -x "$(tool_path nats-server "$NATS_SERVER_VERSION")" ]; then
    bg_task nats-server go_install github.com/nats-io/nats-server/v2 "$NATS_SERVER_VERSION" nats-server
  fi
  if [[ $want == *" nats"[-\ ]* ]] && [ "${NATSBRIDGE_NATSCLI:-1}" != 0 ] &&
    [ ! -x "$(tool_path nats "$NATSCLI_VERSION")" ] && [ ! -f "$BIN/.natscli-$NATSCLI_VERSION-failed" ]; then
    bg_task natscli go_install github.com/nats-io/natscli/nats "$NATSCLI_VERSION" nats
  fi
  if [[ $want == *" kafka "* ]] && [ ! -f "$KAFKA_LIBS/.complete" ] && [ "$late_mvn" = 0 ]; then
    bg_task kafka-libs fetch_kafka_libs
  fi

  local failed=0
  if [ -n "${BG_PID[apt]:-}" ]; then bg_wait apt || failed=1; fi
  if [ -n "${BG_PID[kafka-libs]:-}" ]; then bg_wait kafka-libs || failed=1; fi
  if [ "$late_mvn" = 1 ] && [ "$failed" = 0 ]; then
    bg_task kafka-libs fetch_kafka_libs
    bg_wait kafka-libs || failed=1
  fi
  if [ -n "${BG_PID[nats-server]:-}" ] && ! bg_wait nats-server; then
    if [ ! -x /usr/bin/nats-server ]; then
      log "falling back to Debian's nats-server"
      bg_task nats-server-deb apt_install nats-server
      bg_wait nats-server-deb || failed=1
    fi
  fi
  if [ -n "${BG_PID[natscli]:-}" ] && ! bg_wait natscli; then
    log "natscli is optional; not retrying it on every up (rm $BIN/.natscli-$NATSCLI_VERSION-failed)"
    touch "$BIN/.natscli-$NATSCLI_VERSION-failed"
  fi
  BG_PID=()
  [ "$failed" = 0 ] || die "installation failed"
}

# --------------------------------------------------------------------------- configs

write_nats_config() {
  local d="$STATE/nats"
  mkdir -p "$d/jetstream"
  cat >"$d/nats.conf" <<EOF
# written by deploy/dev/services.sh
server_name: natsbridge_dev
listen: $HOST:$NATS_PORT
http: $HOST:$NATS_MONITOR_PORT
max_payload: 1MB
jetstream {
  store_dir: "$d/jetstream"
  max_memory_store: 1GB
  max_file_store: 20GB
}
EOF
}

# Node N of the cluster: its own JetStream store, routes to every node (its own address
# included: nats-server skips it), so that a node restarted alone rejoins the others.
write_nats_cluster_config() { # N
  local n="$1" d="$STATE/nats-$1" i routes=""
  mkdir -p "$d/jetstream"
  for i in $(seq 1 "$NATS_CLUSTER_NODES"); do
    routes+="    nats-route://$HOST:$((NATS_CLUSTER_ROUTE_BASE + i))"$'\n'
  done
  cat >"$d/nats.conf" <<EOF
# written by deploy/dev/services.sh
server_name: natsbridge_cluster_$n
listen: $HOST:$((NATS_CLUSTER_CLIENT_BASE + n))
http: $HOST:$((NATS_CLUSTER_MONITOR_BASE + n))
max_payload: 1MB
jetstream {
  store_dir: "$d/jetstream"
  max_memory_store: 256MB
  max_file_store: 8GB
}
cluster {
  name: natsbridge_dev_cluster
  listen: $HOST:$((NATS_CLUSTER_ROUTE_BASE + n))
  routes: [
$routes  ]
}
EOF
}

cluster_urls() {
  local i urls=()
  for i in $(seq 1 "$NATS_CLUSTER_NODES"); do urls+=("nats://$HOST:$((NATS_CLUSTER_CLIENT_BASE + i))"); done
  (
    IFS=,
    echo "${urls[*]}"
  )
}

rabbit_env() {
  local d="$STATE/rabbitmq"
  export HOME="$d/home" RABBITMQ_NODENAME="natsbridge@localhost"
  export RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_PID_FILE="$d/rabbitmq.pid"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
  export RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf"
  export RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" ERL_EPMD_ADDRESS="$HOST"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

write_rabbit_config() {
  local d="$STATE/rabbitmq"
  mkdir -p "$d/home" "$d/mnesia" "$d/log"
  : >"$d/rabbitmq-env.conf"
  echo '[rabbitmq_stomp,rabbitmq_management].' >"$d/enabled_plugins"
  cat >"$d/rabbitmq.conf" <<EOF
# written by deploy/dev/services.sh
listeners.tcp.default = $HOST:$AMQP_PORT
stomp.listeners.tcp.1 = $HOST:$RABBIT_STOMP_PORT
management.tcp.ip = $HOST
management.tcp.port = $RABBIT_MGMT_PORT
# guest/guest, from loopback only (the default, stated here on purpose)
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
}

write_activemq_config() {
  local d="$STATE/activemq"
  mkdir -p "$d/conf" "$d/data" "$d/tmp"
  cat >"$d/conf/activemq.xml" <<EOF
<!-- written by deploy/dev/services.sh -->
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
                           http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="natsbridge" useJmx="false"
          persistent="true" schedulerSupport="false" dataDirectory="\${activemq.data}"
          schedulePeriodForDestinationPurge="60000">
    <!-- tests make a unique queue per run: drop those left empty and unused for 10 minutes -->
    <destinationPolicy>
      <policyMap>
        <policyEntries>
          <policyEntry queue=">" gcInactiveDestinations="true" inactiveTimeoutBeforeGC="600000"/>
          <policyEntry topic=">" gcInactiveDestinations="true" inactiveTimeoutBeforeGC="600000"/>
        </policyEntries>
      </policyMap>
    </destinationPolicy>
    <persistenceAdapter>
      <kahaDB directory="\${activemq.data}/kahadb"/>
    </persistenceAdapter>
    <plugins>
      <!-- $ACTIVEMQ_USER/$ACTIVEMQ_PASSWORD; anonymous connects allowed, a wrong password is refused -->
      <simpleAuthenticationPlugin anonymousAccessAllowed="true">
        <users>
          <authenticationUser username="$ACTIVEMQ_USER" password="$ACTIVEMQ_PASSWORD" groups="admins,users"/>
        </users>
      </simpleAuthenticationPlugin>
    </plugins>
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage percentOfJvmHeap="70"/></memoryUsage>
        <storeUsage><storeUsage limit="8 gb"/></storeUsage>
        <tempUsage><tempUsage limit="2 gb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://$HOST:$ACTIVEMQ_OPENWIRE_PORT?maximumConnections=1000&amp;wireFormat.maxFrameSize=104857600"/>
      <transportConnector name="stomp" uri="stomp://$HOST:$ACTIVEMQ_STOMP_PORT?maximumConnections=1000&amp;wireFormat.maxFrameSize=104857600"/>
    </transportConnectors>
  </broker>
</beans>
EOF
  cat >"$d/conf/log4j.properties" <<EOF
log4j.rootLogger=INFO, logfile
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.logfile=org.apache.log4j.RollingFileAppender
log4j.appender.logfile.file=$d/data/activemq.log
log4j.appender.logfile.maxFileSize=5MB
log4j.appender.logfile.maxBackupIndex=2
log4j.appender.logfile.layout=org.apache.log4j.PatternLayout
log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
EOF
}

# The dev PKI every TLS listener uses, made once with openssl in $STATE/pki (again when a
# certificate expires within a day): a CA (ca.pem is what clients trust), a server
# certificate for localhost/127.0.0.1 (server.pem/.key; keystore.pem is Kafka's PEM
# keystore: the unencrypted PKCS#8 key, then the certificate) and a client certificate,
# CN=natsbridge-client (client.pem/.key), for the listeners that require one.
make_dev_pki() {
  local d="$STATE/pki" tmp
  if [ -f "$d/ca.pem" ] && [ -f "$d/keystore.pem" ] &&
    openssl x509 -checkend 86400 -noout -in "$d/server.pem" >/dev/null 2>&1 &&
    openssl x509 -checkend 86400 -noout -in "$d/client.pem" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null || die "openssl is needed for the TLS listeners"
  mkdir -p "$STATE"
  tmp="$(mktemp -d "$STATE/.pki.XXXXXX")"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:localhost,IP:$HOST" "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid,issuer" >"$tmp/server.ext"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >"$tmp/client.ext"
  if ! (
    set -e
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=natsbridge dev CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem
    for who in server client; do
      cn=localhost
      [ "$who" = client ] && cn=natsbridge-client
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$who.key" -out "$who.csr"
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$who.ext" -out "$who.pem"
    done
    cat server.key server.pem >keystore.pem
    chmod 600 ca.key server.key client.key keystore.pem
  ) >"$tmp/openssl.log" 2>&1; then
    cat "$tmp/openssl.log" >&2
    rm -rf "$tmp"
    die "making the dev TLS certificates failed"
  fi
  rm -f "$tmp"/*.csr "$tmp"/*.ext "$tmp/ca.srl" "$tmp/openssl.log"
  rm -rf "$d"
  mv "$tmp" "$d"
  log "made the dev CA, a server and a client certificate in $d"
}

write_kafka_config() {
  local d="$STATE/kafka"
  mkdir -p "$d/data"
  cat >"$d/server.properties" <<EOF
# written by deploy/dev/services.sh: single-node KRaft test broker
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SCRAM_PORT,SSL://$HOST:$KAFKA_TLS_PORT,SCRAM512://$HOST:$KAFKA_SCRAM512_PORT,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,PLAIN://$HOST:$KAFKA_PLAIN_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SCRAM_PORT,SSL://$HOST:$KAFKA_TLS_PORT,SCRAM512://$HOST:$KAFKA_SCRAM512_PORT,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT,PLAIN://$HOST:$KAFKA_PLAIN_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SCRAM512:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,PLAIN:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.scram512.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.scram512.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.plain.sasl.enabled.mechanisms=PLAIN
listener.name.plain.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SCRAM_USER="$KAFKA_SCRAM_PASSWORD";
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$STATE/pki/keystore.pem
listener.name.ssl.ssl.client.auth=none
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$STATE/pki/keystore.pem
listener.name.sasl_ssl.ssl.client.auth=none
log.dirs=$d/data
num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
EOF
  cat >"$d/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $d/server.log
appender.file.filePattern = $d/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
EOF
}

write_mosquitto_config() {
  local d="$STATE/mosquitto"
  mkdir -p "$d/data"
  mosquitto_passwd -b -c "$d/passwd" "$MQTT_USER" "$MQTT_PASSWORD"
  cat >"$d/mosquitto.conf" <<EOF
# written by deploy/dev/services.sh
per_listener_settings true
listener $MQTT_PORT $HOST
allow_anonymous true
# $MQTT_USER/$MQTT_PASSWORD only (a wrong password is refused)
listener $MQTT_AUTH_PORT $HOST
allow_anonymous false
password_file $d/passwd
# TLS with the dev PKI's server certificate
listener $MQTT_TLS_PORT $HOST
allow_anonymous true
cafile $STATE/pki/ca.pem
certfile $STATE/pki/server.pem
keyfile $STATE/pki/server.key
# persistent sessions (the bridge's MQTT sources) and their queued messages survive restarts
persistence true
persistence_location $d/data/
autosave_interval 10
# queue without limit for a client that is away (Mosquitto's default drops beyond 1000)
max_queued_messages 0
log_dest file $d/mosquitto.log
# run as whoever started it (as root, Mosquitto would switch to user mosquitto)
user $(id -un)
EOF
}

kafka_java() { java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$STATE/kafka/log4j2.properties" "$@"; }

format_kafka() {
  local d="$STATE/kafka"
  [ -f "$d/data/meta.properties" ] && return 0
  [ -f "$d/cluster.id" ] || kafka_java kafka.tools.StorageTool random-uuid >"$d/cluster.id"
  kafka_java kafka.tools.StorageTool format -t "$(cat "$d/cluster.id")" -c "$d/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=$KAFKA_SCRAM_USER,password=$KAFKA_SCRAM_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,password=$KAFKA_SCRAM_PASSWORD]" \
    >>"$d/format.log" 2>&1 || {
    tail -n 20 "$d/format.log" >&2
    die "kafka storage format failed"
  }
}

# --------------------------------------------------------------------------- processes

pidfile() { echo "$STATE/$1/pid"; }

# The PID in the pid file, if that process is alive and is really ours (not a reused PID).
service_pid() {
  local f pid
  f="$(pidfile "$1")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE/$1" || return 1
  echo "$pid"
}

# Start CMD... in its own session (so it outlives the caller's job/process group), its PID
# recorded in the service's pid file.
launch() {
  local name="$1"
  shift
  local d="$STATE/$name"
  rm -f "$d/pid"
  # 9>&-: the broker must not inherit (and so hold forever) services.sh's lock
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$d/pid" "$@" >>"$d/stdout.log" 2>&1 </dev/null 9>&- &
  local _
  for _ in $(seq 1 50); do
    [ -s "$d/pid" ] && return 0
    sleep 0.1
  done
  die "$name did not start"
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

service_ports() {
  case "$1" in
  nats) echo "$NATS_PORT $NATS_MONITOR_PORT" ;;
  nats-[1-9]) echo "$((NATS_CLUSTER_CLIENT_BASE + ${1#nats-})) $((NATS_CLUSTER_ROUTE_BASE + ${1#nats-})) $((NATS_CLUSTER_MONITOR_BASE + ${1#nats-}))" ;;
  rabbitmq) echo "$AMQP_PORT $RABBIT_STOMP_PORT $RABBIT_MGMT_PORT $RABBIT_DIST_PORT" ;;
  activemq) echo "$ACTIVEMQ_STOMP_PORT $ACTIVEMQ_OPENWIRE_PORT" ;;
  kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT $KAFKA_SCRAM_PORT $KAFKA_TLS_PORT $KAFKA_SCRAM512_PORT $KAFKA_SASL_SSL_PORT $KAFKA_PLAIN_PORT" ;;
  mosquitto) echo "$MQTT_PORT $MQTT_AUTH_PORT $MQTT_TLS_PORT" ;;
  esac
}

check_ports_free() {
  local p
  for p in $(service_ports "$1"); do
    if port_busy "$p"; then
      die "$1: port $p on $HOST is taken by a process services.sh did not start (a system service? e.g. 'systemctl stop rabbitmq-server')"
    fi
  done
}

start_process() { # NAME: launch without waiting
  local name="$1"
  mkdir -p "$STATE/$name"
  case "$name" in
  nats)
    local b
    b="$(nats_server_bin)"
    [ -n "$b" ] || die "nats-server is not installed; run: $0 up"
    write_nats_config
    launch nats "$b" -c "$STATE/nats/nats.conf" -l "$STATE/nats/nats.log"
    ;;
  nats-[1-9])
    local b
    b="$(nats_server_bin)"
    [ -n "$b" ] || die "nats-server is not installed; run: $0 up"
    write_nats_cluster_config "${name#nats-}"
    launch "$name" "$b" -c "$STATE/$name/nats.conf" -l "$STATE/$name/nats.log"
    ;;
  rabbitmq)
    [ -x "$RABBIT_BIN/rabbitmq-server" ] || die "rabbitmq-server is not installed; run: $0 up"
    write_rabbit_config
    # RUNNING_UNDER_SYSTEMD makes the script exec the VM in the foreground (no wrapper
    # shell, no -detached), so the PID we record is beam.smp itself and SIGTERM stops it
    # cleanly.
    (
      rabbit_env
      export RUNNING_UNDER_SYSTEMD=true
      launch rabbitmq "$RABBIT_BIN/rabbitmq-server"
    )
    ;;
  activemq)
    [ -f "$ACTIVEMQ_HOME/bin/activemq.jar" ] || die "activemq is not installed; run: $0 up"
    write_activemq_config
    local d="$STATE/activemq"
    launch activemq java -Xms128m -Xmx512m -Djava.awt.headless=true -Djava.io.tmpdir="$d/tmp" \
      -Dactivemq.classpath="$d/conf" -Dactivemq.home="$ACTIVEMQ_HOME" -Dactivemq.base="$d" \
      -Dactivemq.conf="$d/conf" -Dactivemq.data="$d/data" \
      -Dlog4j.configuration="file:$d/conf/log4j.properties" \
      -jar "$ACTIVEMQ_HOME/bin/activemq.jar" start "xbean:file:$d/conf/activemq.xml"
    ;;
  kafka)
    [ -f "$KAFKA_LIBS/.complete" ] || die "kafka jars are not installed; run: $0 up"
    make_dev_pki
    write_kafka_config
    format_kafka
    launch kafka java -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$STATE/kafka/log4j2.properties" \
      -Dkafka.logs.dir="$STATE/kafka" -cp "$KAFKA_LIBS/*" kafka.Kafka "$STATE/kafka/server.properties"
    ;;
  mosquitto)
    [ -x /usr/sbin/mosquitto ] || die "mosquitto is not installed; run: $0 up"
    make_dev_pki
    write_mosquitto_config
    launch mosquitto /usr/sbin/mosquitto -c "$STATE/mosquitto/mosquitto.conf"
    ;;
  *) die "unknown service '$name' (one of: ${SERVICES[*]})" ;;
  esac
}

probe() { # NAME: one readiness round trip per endpoint, quiet
  case "$1" in
  nats) "$PY" "$PROBE" nats "$HOST:$NATS_PORT" ;;
  nats-[1-9]) "$PY" "$PROBE" nats "$HOST:$((NATS_CLUSTER_CLIENT_BASE + ${1#nats-}))" ;;
  rabbitmq)
    "$PY" "$PROBE" amqp "$HOST:$AMQP_PORT" guest guest &&
      "$PY" "$PROBE" stomp "$HOST:$RABBIT_STOMP_PORT" guest guest
    ;;
  activemq) "$PY" "$PROBE" stomp "$HOST:$ACTIVEMQ_STOMP_PORT" "$ACTIVEMQ_USER" "$ACTIVEMQ_PASSWORD" ;;
  kafka)
    "$PY" "$PROBE" kafka "$HOST:$KAFKA_PORT" &&
      kafka_login SCRAM-SHA-256 "$KAFKA_SCRAM_PORT" &&
      kafka_login SCRAM-SHA-512 "$KAFKA_SCRAM512_PORT" &&
      kafka_login SCRAM-SHA-512 "$KAFKA_SASL_SSL_PORT" "$STATE/pki/ca.pem" &&
      "$PY" "$PROBE" kafka-sasl "$HOST:$KAFKA_PLAIN_PORT" PLAIN "$KAFKA_SCRAM_USER" "$KAFKA_SCRAM_PASSWORD" &&
      "$PY" "$PROBE" kafka "$HOST:$KAFKA_TLS_PORT" "$STATE/pki/ca.pem"
    ;;
  mosquitto) probe_mqtt "$HOST" "$MQTT_PORT" ;;
  esac
}

# A SCRAM login on PORT; when the broker refuses it (a data dir formatted before this
# mechanism was configured), store the user's credential and log in again.
kafka_login() { # MECH PORT [CAFILE]
  local mech="$1" addr="$HOST:$2"
  shift 2
  "$PY" "$PROBE" kafka-sasl "$addr" "$mech" "$KAFKA_SCRAM_USER" "$KAFKA_SCRAM_PASSWORD" "$@" 2>/dev/null ||
    {
      "$PY" "$PROBE" kafka-add-scram "$HOST:$KAFKA_PORT" "$mech" "$KAFKA_SCRAM_USER" "$KAFKA_SCRAM_PASSWORD" >/dev/null &&
        "$PY" "$PROBE" kafka-sasl "$addr" "$mech" "$KAFKA_SCRAM_USER" "$KAFKA_SCRAM_PASSWORD" "$@"
    }
}

# MQTT 3.1.1 CONNECT (clean session, client id "probe") answered by a CONNACK that accepts it.
probe_mqtt() { # HOST PORT
  "$PY" - "$1" "$2" <<'EOF'
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as sock:
    sock.sendall(b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05probe")
    connack = sock.recv(4)
    if connack != b"\x20\x02\x00\x00":
        sys.exit(f"mqtt {sys.argv[1]}:{sys.argv[2]}: CONNACK {connack!r}")
    sock.sendall(b"\xe0\x00")
EOF
}

service_log() {
  case "$1" in
  nats) echo "$STATE/nats/nats.log" ;;
  nats-[1-9]) echo "$STATE/$1/nats.log" ;;
  rabbitmq) echo "$STATE/rabbitmq/log/natsbridge@localhost.log" ;;
  activemq) echo "$STATE/activemq/data/activemq.log" ;;
  kafka) echo "$STATE/kafka/server.log" ;;
  mosquitto) echo "$STATE/mosquitto/mosquitto.log" ;;
  esac
}

# The launched PID is alive (no command-line check: while a broker's start scripts exec
# their way to the real VM, the command line does not yet name the state dir).
launched_alive() {
  local f pid
  f="$(pidfile "$1")"
  [ -f "$f" ] && pid="$(cat "$f")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

wait_ready() { # NAME [TIMEOUT]
  local name="$1" timeout="${2:-180}" start=$SECONDS err
  while true; do
    if ! launched_alive "$name"; then
      log "$name exited during startup; last lines of its logs:"
      tail -n 30 "$STATE/$name/stdout.log" "$(service_log "$name")" >&2 2>/dev/null || true
      return 1
    fi
    if err="$(probe "$name" 2>&1 >/dev/null)"; then
      return 0
    fi
    if ((SECONDS - start > timeout)); then
      log "$name not ready after ${timeout}s: $err"
      tail -n 30 "$(service_log "$name")" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
}

# Start the named services that are not running, in parallel, and wait until all serve.
start_services() {
  local name failed=0
  declare -A launched=()
  for name in "$@"; do
    if service_pid "$name" >/dev/null; then
      continue
    fi
    check_ports_free "$name"
    launched[$name]=$SECONDS
    start_process "$name"
  done
  for name in "$@"; do
    if wait_ready "$name"; then
      if [ -n "${launched[$name]:-}" ]; then
        log "$name ready (pid $(service_pid "$name"), $((SECONDS - launched[$name]))s after launch)"
      fi
    else
      failed=1
    fi
  done
  [ "$failed" = 0 ] || die "some services did not come up"
}

stop_service() { # NAME: graceful stop (SIGTERM), SIGKILL after a timeout; data is kept
  local name="$1" pid
  pid="$(service_pid "$name")" || {
    rm -f "$(pidfile "$name")"
    return 0
  }
  kill -TERM "$pid" 2>/dev/null || true
  kill -CONT "$pid" 2>/dev/null || true # a test may have left it SIGSTOPped
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not stop in 60s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$(pidfile "$name")"
  log "$name stopped"
}

check_name() {
  local n
  for n in "${SERVICES[@]}"; do [ "$n" = "$1" ] && return 0; done
  die "unknown service '${1:-}' (one of: ${SERVICES[*]})"
}

check_names() { # NAME...: at least one, each known
  [ $# -gt 0 ] || check_name ""
  local n
  for n in "$@"; do check_name "$n"; done
}

# --------------------------------------------------------------------------- commands

endpoints() {
  cat <<EOF
nats      nats://$HOST:$NATS_PORT  (JetStream; monitoring http://$HOST:$NATS_MONITOR_PORT)
nats-1..3 $(cluster_urls)  (a JetStream cluster; monitoring http://$HOST:$((NATS_CLUSTER_MONITOR_BASE + 1)) ...)
rabbitmq  amqp://guest:guest@$HOST:$AMQP_PORT/%2F  stomp://$HOST:$RABBIT_STOMP_PORT  (management http://$HOST:$RABBIT_MGMT_PORT)
activemq  stomp://$HOST:$ACTIVEMQ_STOMP_PORT ($ACTIVEMQ_USER/$ACTIVEMQ_PASSWORD)  openwire tcp://$HOST:$ACTIVEMQ_OPENWIRE_PORT
mosquitto mqtt://$HOST:$MQTT_PORT  (MQTT 3.1.1 and 5, anonymous; $MQTT_USER/$MQTT_PASSWORD on mqtt://$HOST:$MQTT_AUTH_PORT; TLS mqtts://$HOST:$MQTT_TLS_PORT, CA $STATE/pki/ca.pem)
kafka     $HOST:$KAFKA_PORT  (user $KAFKA_SCRAM_USER/$KAFKA_SCRAM_PASSWORD on: SASL_PLAINTEXT SCRAM-SHA-256 $HOST:$KAFKA_SCRAM_PORT, SCRAM-SHA-512 $HOST:$KAFKA_SCRAM512_PORT, PLAIN $HOST:$KAFKA_PLAIN_PORT; SASL_SSL SCRAM-SHA-512 $HOST:$KAFKA_SASL_SSL_PORT; SSL $HOST:$KAFKA_TLS_PORT, CA $STATE/pki/ca.pem; controller $HOST:$KAFKA_CONTROLLER_PORT)
EOF
}

cmd_env() {
  cat <<EOF
export NATSBRIDGE_NATS_URL='nats://$HOST:$NATS_PORT'
export NATSBRIDGE_NATS_MONITOR_URL='http://$HOST:$NATS_MONITOR_PORT'
export NATSBRIDGE_NATS_CLUSTER_URLS='$(cluster_urls)'
export NATSBRIDGE_AMQP_URL='amqp://guest:guest@$HOST:$AMQP_PORT/%2F'
export NATSBRIDGE_RABBITMQ_MANAGEMENT_URL='http://$HOST:$RABBIT_MGMT_PORT'
export NATSBRIDGE_STOMP_RABBITMQ='stomp://$HOST:$RABBIT_STOMP_PORT'
export NATSBRIDGE_STOMP_ACTIVEMQ='stomp://$HOST:$ACTIVEMQ_STOMP_PORT'
export NATSBRIDGE_STOMP_ACTIVEMQ_USER='$ACTIVEMQ_USER'
export NATSBRIDGE_STOMP_ACTIVEMQ_PASSWORD='$ACTIVEMQ_PASSWORD'
export NATSBRIDGE_KAFKA_BOOTSTRAP='$HOST:$KAFKA_PORT'
export NATSBRIDGE_KAFKA_SCRAM_BOOTSTRAP='$HOST:$KAFKA_SCRAM_PORT'
export NATSBRIDGE_KAFKA_SCRAM_USER='$KAFKA_SCRAM_USER'
export NATSBRIDGE_KAFKA_SCRAM_PASSWORD='$KAFKA_SCRAM_PASSWORD'
export NATSBRIDGE_KAFKA_TLS_BOOTSTRAP='$HOST:$KAFKA_TLS_PORT'
export NATSBRIDGE_KAFKA_TLS_CA_FILE='$STATE/pki/ca.pem'
export NATSBRIDGE_KAFKA_SCRAM512_BOOTSTRAP='$HOST:$KAFKA_SCRAM512_PORT'
export NATSBRIDGE_KAFKA_SASL_SSL_BOOTSTRAP='$HOST:$KAFKA_SASL_SSL_PORT'
export NATSBRIDGE_KAFKA_PLAIN_BOOTSTRAP='$HOST:$KAFKA_PLAIN_PORT'
export NATSBRIDGE_KAFKA_SASL_USER='$KAFKA_SCRAM_USER'
export NATSBRIDGE_KAFKA_SASL_PASSWORD='$KAFKA_SCRAM_PASSWORD'
export NATSBRIDGE_MQTT_URL='mqtt://$HOST:$MQTT_PORT'
export NATSBRIDGE_MQTT_AUTH_URL='mqtt://$HOST:$MQTT_AUTH_PORT'
export NATSBRIDGE_MQTT_USER='$MQTT_USER'
export NATSBRIDGE_MQTT_PASSWORD='$MQTT_PASSWORD'
export NATSBRIDGE_MQTT_TLS_URL='mqtts://$HOST:$MQTT_TLS_PORT'
export NATSBRIDGE_MQTT_TLS_CA_FILE='$STATE/pki/ca.pem'
export NATSBRIDGE_TLS_CA='$STATE/pki/ca.pem'
export NATSBRIDGE_TLS_CLIENT_CERT='$STATE/pki/client.pem'
export NATSBRIDGE_TLS_CLIENT_KEY='$STATE/pki/client.key'
export NATSBRIDGE_SERVICES_SH='$HERE/services.sh'
EOF
}

cmd_status() {
  local name pid rc=0 err
  for name in "${SERVICES[@]}"; do
    if ! pid="$(service_pid "$name")"; then
      printf '%-9s down\n' "$name"
      rc=1
    elif err="$(probe "$name" 2>&1 >/dev/null)"; then
      printf '%-9s up    pid %s\n' "$name" "$pid"
    else
      printf '%-9s NOT SERVING  pid %s  (%s)\n' "$name" "$pid" "$err"
      rc=1
    fi
  done
  return "$rc"
}

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$STATE"
  install_missing "${SERVICES[@]}"
  start_services "${SERVICES[@]}"
  log "all services up ($((SECONDS - t0))s)"
  endpoints
}

cmd_down() {
  local name pids=()
  for name in "${SERVICES[@]}"; do
    stop_service "$name" &
    pids+=($!)
  done
  wait "${pids[@]}"
  # rabbitmq's VM started the Erlang port mapper; it is ours too when nothing else uses it
  if command -v epmd >/dev/null && ERL_EPMD_ADDRESS="$HOST" epmd -names 2>/dev/null | grep -q 'epmd: up and running' &&
    ! ERL_EPMD_ADDRESS="$HOST" epmd -names 2>/dev/null | grep -q '^name '; then
    ERL_EPMD_ADDRESS="$HOST" epmd -kill >/dev/null 2>&1 || true
  fi
}

# One services.sh at a time changes the brokers (two `up`s, or a test's restart during an up).
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  if command -v flock >/dev/null && ! flock -w 900 9; then die "another services.sh holds $STATE/.lock"; fi
}

main() {
  local cmd="${1:-}" name
  shift || true
  case "$cmd" in
  up | down | start | stop | restart | clean) take_lock ;;
  esac
  case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  endpoints) endpoints ;;
  start)
    check_names "$@"
    mkdir -p "$STATE"
    install_missing "$@"
    start_services "$@"
    ;;
  stop)
    check_names "$@"
    for name in "$@"; do stop_service "$name"; done
    ;;
  restart)
    check_names "$@"
    for name in "$@"; do stop_service "$name"; done
    start_services "$@"
    ;;
  pid)
    check_name "${1:-}"
    service_pid "$1" || die "$1 is not running"
    ;;
  logs)
    check_name "${1:-}"
    tail -n "${2:-50}" "$(service_log "$1")"
    ;;
  rabbitmqctl)
    rabbit_env
    exec "$RABBIT_BIN/rabbitmqctl" "$@"
    ;;
  clean)
    cmd_down
    rm -rf "$STATE"
    log "removed $STATE"
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
  esac
}

main "$@"
