#!/bin/sh
# Start Redis with authentication on: its users, written from the environment (the
# uncommitted docker/.env) into an ACL file the server alone can read, with each
# password as its SHA-256 hash. The rules are batchscore's
# (jobs.platform.services.redis.acl_rules; tests/unit/test_docker.py holds them equal).
#
# With REDIS_CLUSTER_ANNOUNCE_HOSTNAME set, the server is one node of a Redis Cluster
# (the compose file's cluster profile): the writer and reader also get the commands a
# cluster client sends (acl_rules(..., cluster=True)), and the node's settings go into a
# configuration file the server alone can read, since a replica's password for its
# master (masterauth) must not be on a command line.
set -eu

: "${REDIS_ADMIN_PASSWORD:?set it in docker/.env (see docker/.env.example)}"
: "${REDIS_WRITER_PASSWORD:?set it in docker/.env (see docker/.env.example)}"
: "${REDIS_READER_PASSWORD:?set it in docker/.env (see docker/.env.example)}"
prefix="${BATCHSCORE_REDIS_PREFIX:-batchscore}"
data_dir="${REDIS_DATA_DIR:-/data}"
acl_file="${REDIS_ACL_FILE:-$data_dir/users.acl}"
cluster_host="${REDIS_CLUSTER_ANNOUNCE_HOSTNAME:-}"

hash() { printf %s "$1" | sha256sum | cut -d ' ' -f 1; }

writer_commands="+get +set +exists +ttl +expire +persist +unlink +scan +sadd +srem +smembers +eval +append +getrange +ping +select"
reader_commands="+get +ping +select"
if [ -n "$cluster_host" ]; then
    # CLUSTER SLOTS and COMMAND: how redis-py's cluster client learns which node holds
    # a key; ASKING: after a redirection while a slot moves; WAIT: the writer waits for
    # the replicas to hold a version before serving it.
    writer_commands="$writer_commands +cluster|slots +command +asking +wait"
    reader_commands="$reader_commands +cluster|slots +command +asking"
fi

umask 077
cat > "$acl_file" <<ACL
user default on #$(hash "$REDIS_ADMIN_PASSWORD") ~* &* +@all
user ${prefix}_writer on #$(hash "$REDIS_WRITER_PASSWORD") ~${prefix}:* resetchannels -@all $writer_commands
user ${prefix}_reader on #$(hash "$REDIS_READER_PASSWORD") ~${prefix}:recs:current ~${prefix}:recs:v[0-9]* resetchannels -@all $reader_commands
ACL

if [ -z "$cluster_host" ]; then
    exec docker-entrypoint.sh redis-server --appendonly yes --aclfile "$acl_file" "$@"
fi

# Redis 7.0 nodes gossip their IP addresses, which Docker may change when a container
# is created again; clients are sent to a node's hostname instead (its compose service
# name, which Docker's DNS always resolves): cluster-announce-hostname with
# cluster-preferred-endpoint-type hostname makes CLUSTER SLOTS and the MOVED and ASK
# redirections name it. (A node whose IP changed is found again by the cluster service,
# docker/redis/create-cluster.sh, which introduces the nodes at their current IPs.)
config="$data_dir/redis.conf"
cat > "$config" <<CONF
dir $data_dir
appendonly yes
aclfile $acl_file
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout ${REDIS_CLUSTER_NODE_TIMEOUT_MS:-5000}
cluster-announce-hostname $cluster_host
cluster-preferred-endpoint-type hostname
masteruser default
masterauth $REDIS_ADMIN_PASSWORD
CONF

exec docker-entrypoint.sh redis-server "$config" "$@"
