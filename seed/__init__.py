"""Seed: deploy Django on PostgreSQL with a verified backup and a rollback that is proven."""

__version__ = "0.1.0"
