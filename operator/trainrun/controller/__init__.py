"""The operator: kopf handlers (``handlers``), the reconcile (``reconcile``), log following (``logs``) and the
artifact bookkeeping (``artifacts``). Started with ``kopf run -m trainrun.controller.handlers``.
"""
