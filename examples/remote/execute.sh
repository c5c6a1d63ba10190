#!/bin/sh
# testr's instance_execute: execute.sh INSTANCE "FILES" COMMAND...
# Copies FILES (testr's id lists, local temporary files) to the same paths on the instance,
# then runs COMMAND there in TESTSERVER_REMOTE_DIR. TESTSERVER_SSH is the ssh command
# (default: ssh -T, so that no login banner mixes into the subunit stream).
host=${1:?usage: execute.sh INSTANCE FILES COMMAND...}
files=$2
shift 2
ssh=${TESTSERVER_SSH:-ssh -T}
dir=${TESTSERVER_REMOTE_DIR:?set TESTSERVER_REMOTE_DIR to the project copy on the instances}
for file in $files; do
    $ssh "$host" "mkdir -p '$(dirname "$file")' && cat > '$file.part' && mv '$file.part' '$file'" < "$file" || exit 1
done
exec $ssh "$host" "cd '$dir' && $*"
