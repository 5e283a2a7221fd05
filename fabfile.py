"""Seed's command line: `fab <environment> <task>` (see README.md, `fab --list`)."""

from invoke.collection import Collection

from tasks import checks, copy, db, deploy, imports, overview, sandbox
from tasks.edge import environment_tasks

ns = Collection()
for env_task in environment_tasks():
    ns.add_task(env_task)
ns.add_task(deploy.upgradedb)
ns.add_task(deploy.rollback)
ns.add_task(deploy.unlock)
ns.add_task(checks.validate)
ns.add_task(copy.copy_to)
ns.add_task(copy.copy_rules)
ns.add_task(imports.import_legacy)
ns.add_task(overview.status)
ns.add_task(overview.history)
ns.add_task(overview.plan)
ns.add_task(overview.lint)
ns.add_task(overview.rehearse)
for db_task in (db.backup, db.backups, db.restore, db.cleanup):
    ns.add_task(db_task)
ns.add_collection(Collection.from_module(sandbox), name="sandbox")
