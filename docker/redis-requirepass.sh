#!/bin/sh
# Runs the given redis-server command with `requirepass` from REDIS_PASSWORD, handed over on standard input
# (`redis-server -` reads configuration there), so the password is on no command line: not in `ps`, not in the
# container's Cmd. In compose: redis-requirepass.sh docker-entrypoint.sh redis-server - --save 60 1 ...
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD is empty: set it in .env}"
case $REDIS_PASSWORD in
    # A space, quote or newline would end the value or start another configuration line (secrets-check refuses it too).
    *[!A-Za-z0-9._~=,-]*)
        echo "redis-requirepass: REDIS_PASSWORD holds a character other than letters, digits and . _ ~ = , -" >&2
        exit 1
        ;;
esac
exec "$@" <<EOF
requirepass $REDIS_PASSWORD
EOF
