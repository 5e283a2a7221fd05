"""Seed's checkout: `fab <environment> <task>` (the `seed` command's tasks, see README.md)
plus `fab sandbox.up|down|status`, the sandbox the demo, the tests and the benches use."""

import sys

from invoke.collection import Collection

from sandbox import tasks as sandbox
from seed.cli.main import namespace, refused_fabric_option

# Fabric parsed its core options before loading this file: `fab --dry prod upgradedb`
# would deploy for real. Refused as `seed` refuses them (exit 2).
if refused := refused_fabric_option(sys.argv[1:]):
    sys.exit(print(refused, file=sys.stderr) or 2)

ns = namespace()
ns.add_collection(Collection.from_module(sandbox), name="sandbox")
