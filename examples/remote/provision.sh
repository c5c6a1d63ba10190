#!/bin/sh
# testr's instance_provision: print COUNT instance ids, one per line.
# Here an instance is an ssh destination taken from TESTSERVER_REMOTE_HOSTS (space-separated);
# a real set-up may start VMs or containers here and print their addresses.
count=${1:?usage: provision.sh COUNT}
set -- ${TESTSERVER_REMOTE_HOSTS:?set TESTSERVER_REMOTE_HOSTS to the ssh destinations to use}
[ "$#" -ge "$count" ] || { echo "provision.sh: $count instances asked, $# hosts given" >&2; exit 1; }
i=0
for host; do
    [ "$i" -lt "$count" ] || break
    echo "$host"
    i=$((i + 1))
done
