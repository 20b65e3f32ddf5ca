"""Test support shared by unit, integration and e2e tests (importable as ``support``: tests/ is on sys.path)."""
