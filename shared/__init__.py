"""Code both the web tier and the workers import: config, models, codecs, stores.

Import-light by contract: nothing here imports an ML framework at import time
(``shared.ml`` imports them lazily, inside functions).
"""
