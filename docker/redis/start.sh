#!/bin/sh
# Start Redis with authentication on: its users, written from the environment (the
# uncommitted docker/.env) into an ACL file the server alone can read, with each
# password as its SHA-256 hash. The rules are batchscore's
# (jobs.platform.services.redis.acl_rules; tests/unit/test_docker.py holds them equal).
set -eu

: "${REDIS_ADMIN_PASSWORD:?set it in docker/.env (see docker/.env.example)}"
: "${REDIS_WRITER_PASSWORD:?set it in docker/.env (see docker/.env.example)}"
: "${REDIS_READER_PASSWORD:?set it in docker/.env (see docker/.env.example)}"
prefix="${BATCHSCORE_REDIS_PREFIX:-batchscore}"
acl_file="${REDIS_ACL_FILE:-/data/users.acl}"

hash() { printf %s "$1" | sha256sum | cut -d ' ' -f 1; }

umask 077
cat > "$acl_file" <<ACL
user default on #$(hash "$REDIS_ADMIN_PASSWORD") ~* &* +@all
user ${prefix}_writer on #$(hash "$REDIS_WRITER_PASSWORD") ~${prefix}:* resetchannels -@all +get +set +exists +ttl +expire +persist +unlink +scan +sadd +srem +smembers +eval +append +getrange +ping +select
user ${prefix}_reader on #$(hash "$REDIS_READER_PASSWORD") ~${prefix}:recs:current ~${prefix}:recs:v[0-9]* resetchannels -@all +get +ping +select
ACL

exec docker-entrypoint.sh redis-server --appendonly yes --aclfile "$acl_file" "$@"
