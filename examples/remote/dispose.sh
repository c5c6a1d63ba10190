#!/bin/sh
# testr's instance_dispose: dispose.sh INSTANCE...
# Nothing to do for fixed ssh hosts; a set-up that started VMs or containers stops them here.
exit 0
