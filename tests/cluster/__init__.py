"""The local Kubernetes test cluster (scripts and harness.py); imported by tests/integration/conftest.py."""
