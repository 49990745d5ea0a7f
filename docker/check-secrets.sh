#!/bin/sh
# The compose stack's `secrets-check`: every service waits for it, so nothing starts while a secret named on
# the command line is empty, a known placeholder, short, or holds a character that would change meaning in a
# URL (postgresql://user:PASSWORD@..., redis://:PASSWORD@...), an .env file or Redis' configuration.
# It names the variable and never prints a value.
# Usage: check-secrets.sh NAME...    exit 0: all good; 1: at least one refused (one line each on stderr)

MIN_LENGTH=12  # MLflow's own floor for its admin password

is_placeholder() {  # $1: the value, lowercased
    case $1 in
        *change*me* | *replace*me* | *placeholder* | *example* | *password* | *secret* | *xxxx* | '<'*'>') return 0 ;;
        admin | administrator | root | minioadmin | minio123 | postgres | redis | mlflow | airflow | jupyter) return 0 ;;
        test | token | default | letmein | qwerty* | 123456* | 000000* | 111111*) return 0 ;;
    esac
    return 1
}

status=0
for name in "$@"; do
    case $name in
        '' | [0-9]* | *[!A-Za-z0-9_]*)
            echo "secrets-check: '$name' is not a variable name" >&2
            exit 2
            ;;
    esac
    eval "value=\${$name-}"
    lowered=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')
    problem=
    if [ -z "$value" ]; then
        problem="is empty"
    elif is_placeholder "$lowered"; then
        problem="is still a placeholder"
    elif [ "${#value}" -lt "$MIN_LENGTH" ]; then
        problem="is shorter than $MIN_LENGTH characters"
    else
        case $value in
            *[!A-Za-z0-9._~=,-]*) problem="holds a character other than letters, digits and . _ ~ = , -" ;;
        esac
    fi
    if [ -n "$problem" ]; then
        echo "$name $problem: set a new value in .env (for example the output of" \
            "\`openssl rand -hex 32\`) and run \`docker compose up\` again." >&2
        status=1
    fi
done
[ "$status" -eq 0 ] && echo "secrets-check: $# secrets set, none empty or a placeholder"
exit "$status"
