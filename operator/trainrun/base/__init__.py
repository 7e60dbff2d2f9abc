"""The floor under every other: pure building blocks any part of trainrun may use (standard library only).

  redact  credentials out of text (URLs with passwords, signed-URL secrets) before it is printed
  uri     object-storage URIs: parse and check them (the spec's validation, the stores)
  errors  the storage errors, which redact their messages (raised by ``trainrun.storage`` and ``uri``)
"""
