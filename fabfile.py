"""Seed's checkout: `fab <environment> <task>` (the `seed` command's tasks, see README.md)
plus `fab sandbox.up|down|status`, the sandbox the demo, the tests and the benches use."""

from invoke.collection import Collection

from sandbox import tasks as sandbox
from seed.cli.main import namespace

ns = namespace()
ns.add_collection(Collection.from_module(sandbox), name="sandbox")
