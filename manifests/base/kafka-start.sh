#!/bin/bash
# Starts one Kafka KRaft node of the StatefulSet (manifests/base/kafka.yaml): writes its
# server.properties (node.id = the pod's ordinal, the rest from the kafka-config variables),
# formats the data volume on first start, then runs the broker and controller in place of
# this shell.
set -euo pipefail
conf=/opt/kafka-runtime/server.properties
cat >"$conf" <<EOF
process.roles=broker,controller
node.id=${HOSTNAME##*-}
controller.quorum.voters=${KAFKA_CONTROLLER_QUORUM_VOTERS}
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
advertised.listeners=PLAINTEXT://${HOSTNAME}.kafka-headless.${POD_NAMESPACE}.svc:9092
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=/var/lib/kafka/data/logs
auto.create.topics.enable=false
num.partitions=${KAFKA_TOPIC_PARTITIONS}
log.retention.hours=${KAFKA_LOG_RETENTION_HOURS}
default.replication.factor=${KAFKA_REPLICATION_FACTOR}
min.insync.replicas=${KAFKA_MIN_INSYNC_REPLICAS}
offsets.topic.replication.factor=${KAFKA_REPLICATION_FACTOR}
transaction.state.log.replication.factor=${KAFKA_REPLICATION_FACTOR}
transaction.state.log.min.isr=${KAFKA_MIN_INSYNC_REPLICAS}
EOF
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted \
  --cluster-id "$KAFKA_CLUSTER_ID" --config "$conf"
exec /opt/kafka/bin/kafka-server-start.sh "$conf"
