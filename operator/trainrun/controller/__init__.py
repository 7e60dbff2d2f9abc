"""The operator: kopf wiring (``handlers``), the controller that gets, plans and acts (``operator``), its
watch caches (``informers``), work queue (``queue``), leader election (``leader``), log followers
(``logs``), artifact bookkeeping (``artifacts``) and metrics/probes (``telemetry``). Started with
``trainrun-operator`` (``python -m trainrun.controller``).
"""
