#!/bin/bash
# The standby's entrypoint: on first start, copy the primary with
# pg_basebackup (-R writes the settings that make this a streaming standby),
# then run Postgres as a hot standby. Promote it by hand to fail over (see
# docker-compose.yml).
set -euo pipefail
export PGDATA=/var/lib/postgresql/data
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until gosu postgres pg_basebackup -h postgres -U replicator -D "$PGDATA" -R -X stream; do
    echo "standby: waiting for the primary" >&2
    rm -rf "${PGDATA:?}"/*
    sleep 2
  done
fi
exec gosu postgres postgres -c hot_standby=on
