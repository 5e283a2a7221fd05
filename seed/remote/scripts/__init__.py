"""Small Python programs Seed uploads and runs with a release's own virtualenv."""
