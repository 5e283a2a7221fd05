"""The command line: `seed <environment> <task>` (Fabric tasks, thin over seed/commands)."""
