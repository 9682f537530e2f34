#!/bin/sh
# Form the compose file's Redis Cluster from its nodes, once: REDIS_CLUSTER_NODES lists
# them (host:port), the masters first; with one replica each, redis-cli makes the first
# half masters, splits the 16,384 slots evenly between them, and attaches a replica to
# each. The administrator's password comes in REDISCLI_AUTH, which redis-cli reads, so it
# is never on a command line.
#
# Run again (the stack started anew), it forms nothing: it introduces every node to the
# first at its current address (CLUSTER MEET), which is how a node learns that another,
# known by its id, has a new IP, and waits until the cluster serves every slot.
set -eu

: "${REDISCLI_AUTH:?set REDIS_ADMIN_PASSWORD in docker/.env (see docker/.env.example)}"
: "${REDIS_CLUSTER_NODES:?the nodes, host:port separated by spaces}"
replicas="${REDIS_CLUSTER_REPLICAS:-1}"
wait_seconds="${REDIS_CLUSTER_WAIT_SECONDS:-60}"

# CLUSTER MEET (which redis-cli --cluster create sends) takes an IP address in Redis
# 7.0, not a hostname.
address() {
    host="${1%:*}"
    port="${1##*:}"
    ip="$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')"
    [ -n "$ip" ] || { echo "cannot resolve Redis node $host" >&2; exit 1; }
    echo "$ip:$port"
}

addresses=""
for node in $REDIS_CLUSTER_NODES; do
    addresses="$addresses $(address "$node")"
done
set -- $addresses
first_ip="${1%:*}"
first_port="${1##*:}"

cluster_info() {
    redis-cli -h "${1%:*}" -p "${1##*:}" cluster info | tr -d '\r'
}

known="$(cluster_info "$1" | awk -F: '$1 == "cluster_known_nodes" { print $2 }')"
if [ "${known:-1}" -gt 1 ]; then
    echo "the cluster exists ($known nodes known); introducing each node at its address"
    for node in "$@"; do
        redis-cli -h "${node%:*}" -p "${node##*:}" cluster meet "$first_ip" "$first_port" >/dev/null
    done
else
    redis-cli --cluster create "$@" --cluster-replicas "$replicas" --cluster-yes
fi

# Every node serves every slot, and every replica has its master's data: until then a
# cluster client is not told of the replica (CLUSTER SLOTS), so the writer's WAIT for
# replicas would wait for none.
replica_unsynced() {
    redis-cli -h "${1%:*}" -p "${1##*:}" info replication | tr -d '\r' |
        grep -qx 'role:slave' && ! redis-cli -h "${1%:*}" -p "${1##*:}" info replication |
        tr -d '\r' | grep -qx 'master_link_status:up'
}
elapsed=0
for node in "$@"; do
    until cluster_info "$node" | grep -qx 'cluster_state:ok' && ! replica_unsynced "$node"; do
        if [ "$elapsed" -ge "$wait_seconds" ]; then
            echo "Redis node $node does not serve every slot, or has not its master's data," \
                "after ${wait_seconds}s" >&2
            exit 1
        fi
        sleep 1
        elapsed=$((elapsed + 1))
    done
done
echo "the Redis cluster serves every slot on all $# nodes, every replica in sync"
